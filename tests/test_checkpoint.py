"""dlexp.safe_pickle: round trips, refused malicious pickles, truncated files, atomic writes."""
import builtins
import gzip
import io
import os
import pickle
import subprocess

import numpy as np
import pytest

from dlexp.safe_pickle import CheckpointError, UnsafePickleError, atomic_write, load, safe_load, save


def params():
    rng = np.random.RandomState(0)
    return {
        "W": rng.randn(784, 10).astype(np.float32),
        "b": np.zeros(10, dtype=np.float64),
        "layers": [rng.randint(0, 5, size=(2, 3)), (np.arange(4, dtype=np.int64), None)],
        "meta": {"name": "logreg", "epoch": 3, "lr": 0.13, "best": np.float32(0.075), "ok": True},
        "empty": np.empty((0, 5), dtype=np.float32),
        "fortran": np.asfortranarray(rng.randn(3, 4)),
    }


def assert_same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b and type(a) is type(b)


@pytest.mark.parametrize("name", ["params.pkl", "params.pkl.gz"])
def test_round_trip(tmp_path, name):
    save(tmp_path / name, params())
    assert_same(params(), load(tmp_path / name))
    if name.endswith(".gz"):
        assert (tmp_path / name).read_bytes()[:2] == b"\x1f\x8b"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temp file left


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_pickles_of_every_protocol(protocol):
    obj = params()
    assert_same(obj, safe_load(io.BytesIO(pickle.dumps(obj, protocol=protocol))))


class SystemCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class Eval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return builtins.eval, (f"open({str(self.marker)!r}, 'w').close()",)


class Popen:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return subprocess.Popen, (["touch", str(self.marker)],)


@pytest.mark.parametrize("evil, refused", [(SystemCall, "system"), (Eval, "builtins.eval"), (Popen, "subprocess.Popen")])
def test_malicious_pickle_refused(tmp_path, evil, refused):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"W": np.ones(3), "x": evil(marker)}, protocol=2)
    with pytest.raises(UnsafePickleError, match=refused) as e:
        safe_load(io.BytesIO(payload))
    assert "\n" not in str(e.value)
    assert not marker.exists()

    path = tmp_path / "evil.pkl"
    path.write_bytes(payload)
    with pytest.raises(pickle.UnpicklingError, match=f"{path}.*refusing to unpickle .*{refused}"):
        load(path)
    with pytest.raises(CheckpointError):  # also a CheckpointError, for callers that catch one type
        load(path)
    assert not marker.exists()


class Rot13:
    def __reduce__(self):
        import codecs
        return codecs.encode, ("abc", "rot13")  # pickled as _codecs.encode, like protocol-2 bytes


def test_codecs_encode_only_latin1():
    with pytest.raises(UnsafePickleError, match="rot13"):
        safe_load(io.BytesIO(pickle.dumps(Rot13(), protocol=2)))


@pytest.mark.parametrize("name", ["params.pkl", "params.pkl.gz"])
def test_truncated_file(tmp_path, name):
    path = tmp_path / name
    save(path, params())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=str(path)) as e:
        load(path)
    assert "\n" not in str(e.value)


def test_garbage_and_missing(tmp_path):
    (tmp_path / "junk.pkl").write_bytes(b"this is not a pickle at all")
    with pytest.raises(CheckpointError, match="junk.pkl"):
        load(tmp_path / "junk.pkl")
    with pytest.raises(CheckpointError, match="no such file"):
        load(tmp_path / "missing.pkl")
    (tmp_path / "bad.pkl.gz").write_bytes(b"\x1f\x8b" + b"\x00" * 30)
    with pytest.raises(CheckpointError, match="bad.pkl.gz"):
        load(tmp_path / "bad.pkl.gz")


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    path = tmp_path / "params.pkl"
    save(path, {"version": 1})
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write(b"half a pickle")
            raise RuntimeError("disk full")
    assert load(path) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["params.pkl"]

    with atomic_write(path, "w") as f:
        f.write("text")
    assert path.read_text() == "text"


def test_truncated_gzip_names_file(tmp_path):
    path = tmp_path / "p.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps({"a": np.arange(100)}))[:40])
    with pytest.raises(CheckpointError, match="p.pkl.gz"):
        load(path)
