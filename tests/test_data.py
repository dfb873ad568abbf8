"""dlexp.data: file formats, lookup, verified downloads (against a local server), splits."""
import dataclasses
import gzip
import hashlib
import http.server
import io
import os
import pickle
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from dlexp.config import DatasetConfig
from dlexp.data import DataError, load_dataset, sources
from dlexp.data.formats import read_idx, read_mnist_npz, read_mnist_pkl_gz

IDX = sources.IDX_NAMES  # train images, train labels, test images, test labels
REAL_SYSTEM_PATHS = dict(sources.SYSTEM_PATHS)


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No $DLEXP_DATA / $DLEXP_CACHE / system datasets / home cache: tests see only tmp_path."""
    for var in ("DLEXP_DATA", "DLEXP_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(sources, "SYSTEM_PATHS", {"mnist": [], "fashion_mnist": []})
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def cfg(tmp_path, **kw):
    kw.setdefault("cache_dir", str(tmp_path / "cache"))
    kw.setdefault("download", False)
    return DatasetConfig(**kw)


# ------------------------------------------------------------ synthetic files
def idx_bytes(a: np.ndarray) -> bytes:
    magic = 0x0803 if a.ndim == 3 else 0x0801
    return struct.pack(f">{1 + a.ndim}I", magic, *a.shape) + a.astype(np.uint8).tobytes()


def synthetic(n_train=60, n_test=12, seed=0):
    rng = np.random.RandomState(seed)
    return (rng.randint(0, 256, (n_train, 28, 28)).astype(np.uint8), (np.arange(n_train) % 10).astype(np.uint8),
            rng.randint(0, 256, (n_test, 28, 28)).astype(np.uint8), (np.arange(n_test) % 10).astype(np.uint8))


def write_idx_dir(directory: Path, arrays=None, gz=True) -> tuple:
    arrays = arrays or synthetic()
    directory.mkdir(parents=True, exist_ok=True)
    for name, a in zip(IDX, arrays):
        data = idx_bytes(a)
        if gz:
            (directory / name).write_bytes(gzip.compress(data, mtime=0))
        else:
            (directory / name.removesuffix(".gz")).write_bytes(data)
    return arrays


class Py2Pickler(pickle._Pickler):
    """Pickle as Python 2 + numpy 1.x did: byte strings as STRING opcodes, numpy.core names."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = dispatch[str] = save_py2_str

    def save_global(self, obj, name=None):
        module = {np.ndarray: "numpy", np.dtype: "numpy"}.get(obj, "numpy.core.multiarray")
        self.write(pickle.GLOBAL + f"{module}\n{obj.__name__}\n".encode())
        self.memoize(obj)


def write_pkl_gz(path: Path, obj) -> None:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    path.write_bytes(gzip.compress(buf.getvalue()))


def pkl_splits(sizes=(20, 5, 5), seed=0):
    rng = np.random.RandomState(seed)
    return tuple((rng.rand(n, 784).astype(np.float32), (np.arange(n) % 10).astype(np.int64)) for n in sizes)


# ------------------------------------------------------------------- formats
@pytest.mark.parametrize("gz", [True, False])
def test_read_idx(tmp_path, gz):
    arrays = write_idx_dir(tmp_path, gz=gz)
    for name, a in zip(IDX, arrays):
        got = read_idx(tmp_path / (name if gz else name.removesuffix(".gz")))
        assert got.dtype == np.uint8 and got.shape == a.shape
        np.testing.assert_array_equal(got, a)


def test_load_idx_dir_split_and_values(tmp_path):
    tx, ty, sx, sy = write_idx_dir(tmp_path / "d")
    ds = load_dataset(cfg(tmp_path, path=str(tmp_path / "d")))
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (50, 10, 12)  # last sixth validates (10k of 60k)
    assert ds.image_shape == (1, 28, 28) and ds.n_classes == 10 and ds.source == str(tmp_path / "d")
    assert ds.train.x.dtype == np.float32 and ds.train.y.dtype == np.int64 and ds.train.x.shape == (50, 784)
    np.testing.assert_allclose(ds.train.x, tx[:50].reshape(50, -1) / 255.0, rtol=1e-6)
    np.testing.assert_allclose(ds.valid.x, tx[50:].reshape(10, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.test.y, sy)
    assert len(ds.checksum) == 64

    capped = load_dataset(cfg(tmp_path, path=str(tmp_path / "d"), max_train=7, max_valid=3, max_test=2))
    assert (len(capped.train), len(capped.valid), len(capped.test)) == (7, 3, 2)
    assert capped.checksum == ds.checksum  # taken before the caps
    np.testing.assert_array_equal(capped.train.x, ds.train.x[:7])


def test_pkl_gz_python2_pickle(tmp_path):
    splits = pkl_splits()
    write_pkl_gz(tmp_path / "mnist.pkl.gz", splits)
    got = read_mnist_pkl_gz(tmp_path / "mnist.pkl.gz")
    for (x, y), (gx, gy) in zip(splits, got):
        np.testing.assert_array_equal(gx, x)
        np.testing.assert_array_equal(gy, y)

    ds = load_dataset(cfg(tmp_path, path=str(tmp_path / "mnist.pkl.gz")))
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (20, 5, 5)  # the file's own split
    assert ds.image_shape == (1, 28, 28)
    np.testing.assert_array_equal(ds.valid.x, splits[1][0])


def test_npz(tmp_path):
    tx, ty, sx, sy = synthetic(n_train=30, n_test=6)
    np.savez(tmp_path / "mnist.npz", x_train=tx, y_train=ty, x_test=sx, y_test=sy)
    (gx, gy), (hx, hy) = read_mnist_npz(tmp_path / "mnist.npz")
    np.testing.assert_array_equal(gx, tx)
    np.testing.assert_array_equal(hy, sy)

    ds = load_dataset(cfg(tmp_path, path=str(tmp_path / "mnist.npz")))
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (25, 5, 6)
    np.testing.assert_allclose(ds.test.x, sx.reshape(6, -1) / 255.0, rtol=1e-6)

    write_idx_dir(tmp_path / "idx", (tx, ty, sx, sy))  # the same data as IDX files: the same checksum
    assert load_dataset(cfg(tmp_path, path=str(tmp_path / "idx"))).checksum == ds.checksum


# ----------------------------------------------------------------- bad files
def test_truncated_gz(tmp_path):
    write_idx_dir(tmp_path)
    data = (tmp_path / IDX[0]).read_bytes()
    (tmp_path / IDX[0]).write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=f"{IDX[0]}: truncated gzip"):
        read_idx(tmp_path / IDX[0])
    with pytest.raises(DataError, match="truncated gzip"):
        load_dataset(cfg(tmp_path, path=str(tmp_path)))


def test_bad_idx_files(tmp_path):
    (tmp_path / "magic").write_bytes(struct.pack(">4I", 0x0802, 1, 28, 28) + bytes(784))
    with pytest.raises(DataError, match=r"magic: bad IDX magic 0x00000802"):
        read_idx(tmp_path / "magic")
    (tmp_path / "short").write_bytes(struct.pack(">4I", 0x0803, 2, 28, 28) + bytes(784 + 5))
    with pytest.raises(DataError, match=r"short: IDX payload is 789 bytes but the header \(2, 28, 28\) needs 1568"):
        read_idx(tmp_path / "short")
    (tmp_path / "tiny").write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="too short"):
        read_idx(tmp_path / "tiny")


def test_count_mismatch_and_label_range(tmp_path):
    tx, ty, sx, sy = synthetic()
    write_idx_dir(tmp_path / "count", (tx, ty[:-1], sx, sy))
    with pytest.raises(DataError, match="60 images but 59 labels"):
        load_dataset(cfg(tmp_path, path=str(tmp_path / "count")))
    bad = sy.copy()
    bad[3] = 10
    write_idx_dir(tmp_path / "range", (tx, ty, sx, bad))
    with pytest.raises(DataError, match=r"t10k-images.*label 10 outside \[0, 10\)"):
        load_dataset(cfg(tmp_path, path=str(tmp_path / "range")))
    write_idx_dir(tmp_path / "swapped", (tx, ty, sy, sx))
    with pytest.raises(DataError, match="expected an IDX image file"):
        load_dataset(cfg(tmp_path, path=str(tmp_path / "swapped")))


def test_nan_and_range_in_pkl(tmp_path):
    splits = pkl_splits()
    splits[2][0][1, 5] = np.nan
    write_pkl_gz(tmp_path / "nan.pkl.gz", splits)
    with pytest.raises(DataError, match=r"nan.pkl.gz \(test\): inputs contain NaN"):
        read_mnist_pkl_gz(tmp_path / "nan.pkl.gz")
    splits = pkl_splits()
    splits[0][0][0, 0] = 3.0
    write_pkl_gz(tmp_path / "big.pkl.gz", splits)
    with pytest.raises(DataError, match=r"big.pkl.gz \(train\): pixel values span"):
        load_dataset(cfg(tmp_path, path=str(tmp_path / "big.pkl.gz")))


@pytest.mark.parametrize("obj, message", [
    (pkl_splits()[:2], "expected a tuple of 3 .* got tuple of length 2"),
    ({"train": 1}, "expected a tuple of 3 .* got dict"),
    ((pkl_splits()[0], pkl_splits()[1], "test"), "test split is not an \\(x, y\\) pair"),
    ((pkl_splits()[0], (np.zeros((5, 28, 28), np.float32), np.zeros(5, np.int64)), pkl_splits()[2]),
     r"valid x must be 2-d"),
    ((pkl_splits()[0], (np.zeros((5, 784), np.float32), np.zeros(4, np.int64)), pkl_splits()[2]),
     "5 images but 4 labels"),
    ((pkl_splits()[0], (np.zeros((5, 784), np.float32), np.zeros(5, np.float32)), pkl_splits()[2]),
     "labels must be a 1-d integer array"),
])
def test_wrong_pkl_structure(tmp_path, obj, message):
    write_pkl_gz(tmp_path / "mnist.pkl.gz", obj)
    with pytest.raises(DataError, match=message):
        read_mnist_pkl_gz(tmp_path / "mnist.pkl.gz")


def test_malicious_pkl_and_bad_npz(tmp_path):
    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'pwned'}",)

    (tmp_path / "mnist.pkl.gz").write_bytes(gzip.compress(pickle.dumps((Evil(),), protocol=2)))
    with pytest.raises(DataError, match="refusing to unpickle"):
        read_mnist_pkl_gz(tmp_path / "mnist.pkl.gz")
    assert not (tmp_path / "pwned").exists()

    tx, ty, sx, sy = synthetic()
    np.savez(tmp_path / "keys.npz", x_train=tx, y_train=ty)
    with pytest.raises(DataError, match="keys.npz: missing arrays x_test, y_test"):
        read_mnist_npz(tmp_path / "keys.npz")
    np.savez(tmp_path / "obj.npz", x_train=np.array([None]), y_train=ty, x_test=sx, y_test=sy)
    with pytest.raises(DataError, match="obj.npz: not a valid npz"):
        read_mnist_npz(tmp_path / "obj.npz")
    (tmp_path / "cut.npz").write_bytes((tmp_path / "keys.npz").read_bytes()[:100])
    with pytest.raises(DataError, match="cut.npz"):
        read_mnist_npz(tmp_path / "cut.npz")


# -------------------------------------------------------------------- lookup
def test_offline_message_when_nothing_found(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset(cfg(tmp_path, name="mnist"))
    msg = str(e.value)
    assert "\n" not in msg
    for part in (*IDX, "mnist.npz", str(tmp_path / "cache" / "mnist"), "dataset.download=false",
                 "dataset.path=", "DLEXP_DATA", "dataset=digits", "apt-get install dataset-fashion-mnist"):
        assert part in msg
    with pytest.raises(DataError, match="dataset.path=.*nowhere: no such file"):
        load_dataset(cfg(tmp_path, path=str(tmp_path / "nowhere")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: directory does not hold train-images"):
        load_dataset(cfg(tmp_path, path=str(tmp_path / "empty")))


def test_lookup_env_and_cache(tmp_path, monkeypatch):
    write_idx_dir(tmp_path / "data" / "mnist")
    monkeypatch.setenv("DLEXP_DATA", str(tmp_path / "data"))
    assert load_dataset(cfg(tmp_path)).source == str(tmp_path / "data" / "mnist")
    # Fashion-MNIST shares MNIST's file names: never taken from the root of $DLEXP_DATA
    write_idx_dir(tmp_path / "data")
    with pytest.raises(DataError, match="fashion_mnist: files not found"):
        load_dataset(cfg(tmp_path, name="fashion_mnist"))
    write_idx_dir(tmp_path / "data" / "fashion-mnist", synthetic(seed=1))
    assert load_dataset(cfg(tmp_path, name="fashion_mnist")).source == str(tmp_path / "data" / "fashion-mnist")

    monkeypatch.delenv("DLEXP_DATA")
    write_idx_dir(tmp_path / "envcache" / "mnist", gz=False)
    monkeypatch.setenv("DLEXP_CACHE", str(tmp_path / "envcache"))
    assert load_dataset(cfg(tmp_path, cache_dir=None)).source == str(tmp_path / "envcache" / "mnist")


# ------------------------------------------------------------------ download
class Handler(http.server.BaseHTTPRequestHandler):
    """/good/<f> serves f, /bad/<f> a corrupted f, /cut/<f> half of f then hangs up."""

    def do_GET(self):
        self.server.hits.append(self.path)
        kind, _, name = self.path.strip("/").partition("/")
        data = self.server.files.get(name)
        if data is None or kind not in ("good", "bad", "cut"):
            self.send_error(404)
            return
        if kind == "bad":
            data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2] if kind == "cut" else data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A local mirror of synthetic MNIST files, with their md5 made the official ones."""
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    write_idx_dir(tmp_path / "served")
    files = {n: (tmp_path / "served" / n).read_bytes() for n in IDX}
    md5 = {n: hashlib.md5(b).hexdigest() for n, b in files.items()}
    monkeypatch.setitem(sources.FILE_SETS, "mnist", dataclasses.replace(sources.FILE_SETS["mnist"], md5=md5))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.files, httpd.hits = files, []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def cached_files(tmp_path):
    return sorted(p.name for p in (tmp_path / "cache").rglob("*") if p.is_file())


def test_download_verified_and_cached(tmp_path, server):
    httpd, url = server
    c = cfg(tmp_path, download=True, mirrors=[f"{url}/good/"])
    ds = load_dataset(c)
    assert ds.source == str(tmp_path / "cache" / "mnist")
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (50, 10, 12)
    assert cached_files(tmp_path) == sorted(IDX)
    for n in IDX:
        assert (tmp_path / "cache" / "mnist" / n).read_bytes() == httpd.files[n]
    assert len(httpd.hits) == 4
    assert load_dataset(c).checksum == ds.checksum
    assert len(httpd.hits) == 4  # the second load reads the cache


def test_download_falls_back_to_next_mirror(tmp_path, server):
    httpd, url = server
    load_dataset(cfg(tmp_path, download=True, mirrors=[f"{url}/bad", f"{url}/missing/", f"{url}/good/"]))
    assert cached_files(tmp_path) == sorted(IDX)
    assert len(httpd.hits) == 12


@pytest.mark.parametrize("kind, message", [
    ("bad", "md5 [0-9a-f]{32} does not match the official"),
    ("cut", "connection closed after [0-9]+ of [0-9]+ bytes"),
    ("missing", "HTTP Error 404"),
])
def test_failed_download_leaves_nothing(tmp_path, server, kind, message):
    httpd, url = server
    with pytest.raises(DataError, match=f"mnist: could not download train-images-idx3-ubyte.gz .*{kind}.*{message}") as e:
        load_dataset(cfg(tmp_path, download=True, mirrors=[f"{url}/{kind}/"]))
    assert "\n" not in str(e.value) and "dataset=digits" in str(e.value)
    assert cached_files(tmp_path) == []


# -------------------------------------------------------------------- others
def test_digits(tmp_path):
    ds = load_dataset(cfg(tmp_path, name="digits"))
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (1297, 250, 250)
    assert ds.image_shape == (1, 8, 8) and ds.n_classes == 10 and ds.source == "sklearn"
    for s in (ds.train, ds.valid, ds.test):
        assert s.x.dtype == np.float32 and s.x.shape[1] == 64 and s.y.dtype == np.int64
        assert s.x.min() == 0.0 and s.x.max() == 1.0
        assert set(np.unique(s.y)) == set(range(10))
    again = load_dataset(cfg(tmp_path, name="digits", max_train=100))
    np.testing.assert_array_equal(again.train.x, ds.train.x[:100])  # fixed permutation
    assert again.checksum == ds.checksum


def test_debian_fashion_mnist(tmp_path, monkeypatch):
    debian = "/usr/share/datasets/fashion-mnist"
    if not os.path.isdir(debian):
        pytest.skip(f"{debian} not installed (apt-get install dataset-fashion-mnist)")
    assert debian in REAL_SYSTEM_PATHS["fashion_mnist"]
    monkeypatch.setattr(sources, "SYSTEM_PATHS", {"mnist": [], "fashion_mnist": [debian]})
    ds = load_dataset(cfg(tmp_path, name="fashion_mnist"))
    assert ds.source == debian
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (50000, 10000, 10000)
    assert ds.n_classes == 10 and ds.image_shape == (1, 28, 28)
    assert set(np.unique(ds.train.y)) == set(range(10))
    assert 0.0 <= ds.test.x.min() and ds.test.x.max() <= 1.0
