"""Empirical neural tangent kernels (eNTKs) of Equinox models.

The eNTK of a model f(x; θ) with K outputs on inputs x1 (N1 samples) and x2 (N2 samples) is

    Θ(x, x')_{kl} = <∂f_k(x)/∂θ, ∂f_l(x')/∂θ>,

returned as (N1, N2, K, K) with ``outputs="full"`` or summed over k = l to (N1, N2) with
``outputs="trace"``. Three independent methods compute it:

- ``"jacobian"``: per-sample Jacobians (N, K, P) leaf by leaf, contracted with matmuls.
- ``"ntvp"``: per-sample Jacobian rows of x2 pushed forward through the model on x1 with
  ``jax.jvp`` (kernel-vector products); never forms the Jacobian of x1.
- ``"structured"``: layer-wise rules. A tapped layer (``eqx.nn.Linear``; ``eqx.nn.Conv*``
  with ``groups=1`` and zero padding; ``eqx.nn.Embedding``), called at the top level or
  per token inside one ``jax.vmap``, any number of times, maps "tokens" x_t (inputs, conv
  patches, one-hot ids) linearly, so the Jacobian of its weight is Σ_t g_t ⊗ x_t and its
  kernel block is Σ_{t,s} (x_t·x'_s + 1 for a bias)(g_t·g'_s) from the token Gram and the
  cotangent Gram (for an embedding x_t·x'_s = [id_t == id'_s]). Memory per sample is
  (K, T, d_out) + (T, d_in), never (K, d_out·d_in). The cotangents g come from a zero
  perturbation added to each layer's output, in one backward sweep with K cotangents;
  inside a vmap, ``jax.custom_batching.custom_vmap`` hands the tap the whole token batch.
  Per layer a cost model picks this token-Gram route or Jacobian contraction (cheaper when
  T² exceeds roughly d_in·d_out / (d_in/K + d_out)); convolutions on the Jacobian route
  form it from patches, and a strided convolution passes its K cotangents back by phases
  (stride-1 convolutions, not XLA's transpose over zero-dilated cotangents). Everything
  else (norms, attention-free parameters, layers in scan/jit/nested vmaps, weights read
  directly) falls back to per-leaf Jacobians.

``"auto"`` takes the method with the fewest estimated FLOPs (:func:`costs`) whose features
fit ``memory_limit`` and picks a ``block_size`` when the tiles would not; when no features
fit, ``ntvp`` tile by tile. A symmetric kernel (``x2=None``) whose features fit is
contracted as the upper triangle of static tiles, mirrored (:func:`_triangle`), where
that measured faster than one product (:func:`_triangle_block`): full outputs of at least
320 Jacobian rows (N·K), traced outputs of wide per-sample Jacobians, and traced outputs of
models whose parameters are all on the Gram route (an MLP) from N = 256. A full kernel of
2²⁴ entries or more ((N·K)², 64 MB in float32) has these tiles written into it in place
by a loop rather than concatenated (one copy of the output fewer).

Everything is compiled once per (model structure, shapes, options) with ``eqx.filter_jit``.
With ``block_size`` the kernel is assembled from (block_size × block_size) tiles inside one
``lax.fori_loop``; any N works (inputs are zero-padded, the padding is cut off), and the
symmetric case ``x2=None`` computes each off-diagonal tile once and mirrors it.

The package (private modules, re-exported here):

- ``_model``: models (:func:`as_model`), input checks (:func:`check_inputs`), the options.
- ``_stateful``: models with state (a Flax NNX module, a linen module with its variables,
  an Equinox model with its ``eqx.nn.State``): trainable parameters differentiated, the
  state carried frozen, inference mode.
- ``_nnx_layers``: Flax dense, convolution and embedding layers carried as Equinox ones, so
  the structured method taps them; an NNX module's found by walking its graph.
- ``_linen_layers``: a linen module's plain layers, found by running it once on the
  input's shape, and the interception that makes them call their Equinox layers.
- ``_taps``: layer taps of the structured method (``_tap``, ``_probe``, ``_Layer``).
- ``_features``: per-sample features (:func:`structured_features`, :func:`structured_vjp`,
  per-leaf Jacobians) and each tapped layer's route (``_with_routes``).
- ``_tiling``: contractions of two feature blocks, and tiles assembled into the kernel
  (``_tiles``, ``_triangle``, ``_feature_kernel``, ``_ntvp_kernel``).
- ``_costs``: the cost model and method choice (:func:`costs`, ``_choose``, the triangle
  thresholds of ``_triangle_block``).
- ``_plan``: the choice cache, the per-model plan cache (``_Static``, ``_PLANS``) and the
  per-structure choice of Flax models (``_FLAX_CHOICES``).
- ``_entk``: :func:`entk` and :func:`entk_diag`.

Only the private names other modules, tests and benchmarks use are re-exported here. The
thresholds and ``_with_routes`` are not: they are read from the globals of the module that
uses them, so a test or benchmark sets them there (``_costs._TRIANGLE_ROWS``,
``_tiling._IN_PLACE_ELEMENTS``, ``_features._with_routes``).
"""

from ntkbench.kernel._costs import _choose as _choose
from ntkbench.kernel._costs import costs
from ntkbench.kernel._entk import _DEFAULT_MEMORY_LIMIT as _DEFAULT_MEMORY_LIMIT
from ntkbench.kernel._entk import _entk_jit as _entk_jit
from ntkbench.kernel._entk import _symmetrize as _symmetrize
from ntkbench.kernel._entk import entk, entk_diag
from ntkbench.kernel._features import structured_features, structured_vjp
from ntkbench.kernel._model import Method as Method
from ntkbench.kernel._model import Outputs as Outputs
from ntkbench.kernel._model import _n_outputs as _n_outputs
from ntkbench.kernel._model import as_model, check_inputs
from ntkbench.kernel._plan import _PLANS as _PLANS
from ntkbench.kernel._plan import _plan_key as _plan_key
from ntkbench.kernel._plan import _resolve_method as _resolve_method
from ntkbench.kernel._plan import _Static as _Static
from ntkbench.kernel._taps import _phase_transpose as _phase_transpose
from ntkbench.kernel._taps import _probe as _probe
from ntkbench.kernel._taps import _tap as _tap
from ntkbench.kernel._tiling import _contract_jacobian as _contract_jacobian
from ntkbench.kernel._tiling import _tiles as _tiles
from ntkbench.kernel._tiling import _triangle as _triangle

__all__ = ["entk", "entk_diag", "as_model", "costs", "structured_features", "structured_vjp", "check_inputs"]
