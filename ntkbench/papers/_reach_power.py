"""The ``reach`` paper's size claim at power: Llama-style decoders (:class:`ntkbench.Decoder`)
over two decades of non-embedding parameters, the LNP terms recorded kernel-free on the
training batch (no probe spectrum), and the statistics that decide whether larger models end
with lower spectral position χ_pos (:func:`size_claim`)."""

from __future__ import annotations

from typing import Any

__all__ = ["POWER_MEASURES", "POWER_WIDTHS", "power_config"]

#: the LNP terms on the training batch (Hutchinson χ_net with 4 probes) and the losses: no
#: kernel is formed, so the size is bounded by training, not by a spectrum
POWER_MEASURES: list[str] = [
    "loss",
    "test_loss",
    "spectral_position",
    "chi_loss",
    "chi_net",
    "chi_net_se",
    "grad_norm_sq",
]
#: model widths; ``aspect`` 32 (layers = width // 32) and ``head_dim`` 8 keep the shape:
#: 3.4 k … 0.45 M non-embedding parameters (2.1 decades)
POWER_WIDTHS: list[int] = [16, 24, 32, 48, 64, 80, 112]


def power_config(data: dict[str, Any], title: str, *, steps: int = 1000, seeds: int = 3) -> dict[str, Any]:
    """The sweep config of one data set of the ``power`` config: every size trains on the
    same windows for ``steps`` Adam steps of 32 sequences (the same token budget), recorded
    every 25 steps."""
    return {
        "title": f"reach: Llama-style decoders over two decades of size on {title}",
        "paper": "reach",
        "seed": 0,
        "model": {"name": "decoder", "width": POWER_WIDTHS[0], "aspect": 32, "head_dim": 8},
        "data": data,
        "train": {"optimizer": "adam", "lr": 1e-3, "steps": steps, "batch_size": 32, "loss": "ce"},
        "record": {"every": 25, "probe": 8, "measures": list(POWER_MEASURES), "lnp_probes": 4, "lnp_batch": "train"},
        "grid": {"width": list(POWER_WIDTHS), "seed": list(range(seeds))},
    }
