"""The tutorials' own code as a column of the benchmark: the peer in ``../shared/peers/seedcode``.

That folder holds the LISA-lab Deep Learning Tutorials' original Theano code, run unchanged on
PyTensor (C linker, OpenBLAS, float32) through a small ``theano`` shim, and a timing harness
(its README says what it measures). When it is set up (``./setup.sh`` once: the venv
``/tmp/peer-venv`` with PyTensor), every protocol the tutorials have is also timed there, in the
same rounds as dlexp, on the same rows (the protocol's subset, converted once to the tutorials'
``mnist.pkl.gz`` format), and scaled the same way. Not set up: the column is left out.

The SdA tutorial's pretraining (SdA.py) is not in the peer folder; set ``PEER_SDA`` to the upstream
``code/SdA.py`` (lisa-lab/DeepLearningTutorials) to time it too.

Environment: ``DLEXP_PEER`` (the peer folder), ``PEER_VENV`` (default /tmp/peer-venv),
``PEER_DATA_DIR`` (default /tmp/peer-data), ``PEER_LINKER`` / ``PEER_BLAS`` as the peer's run.sh.
"""
import os
import subprocess
from pathlib import Path

from .timing import json_result

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"logreg": "logreg", "mlp": "mlp", "lenet": "lenet5", "da": "dA", "rbm": "rbm", "sda": "sda"}


def seedcode() -> Path:
    return Path(os.environ.get("DLEXP_PEER", ROOT.parent / "shared" / "peers" / "seedcode")).resolve()


def python() -> Path:
    return Path(os.environ.get("PEER_VENV", "/tmp/peer-venv")) / "bin" / "python"


def sda_file():
    path = os.environ.get("PEER_SDA") or str(seedcode() / "tutorials" / "SdA.py")
    return path if os.path.isfile(path) else None


def available() -> tuple:
    """(True, description) when the peer is set up here, else (False, why not)."""
    here = seedcode()
    if not (here / "harness.py").is_file():
        return False, f"no peer at {here}"
    if not python().is_file():
        return False, f"the peer is not set up ({python()} missing: run {here}/setup.sh)"
    try:
        out = subprocess.run([str(python()), "-c", "import pytensor; print(pytensor.__version__)"],
                             capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as e:
        return False, f"the peer's Python does not run: {e}"
    if out.returncode != 0:
        return False, "PyTensor does not import in the peer's venv: " + (out.stderr.strip().splitlines() or ["?"])[-1]
    return True, f"PyTensor {out.stdout.strip()}"


def protocols(keys) -> list:
    """The protocols of ``keys`` the peer can run."""
    return [k for k in keys if k in MODELS and (k != "sda" or sda_file())]


def flags() -> str:
    return (f"floatX=float32,linker={os.environ.get('PEER_LINKER', 'cvm')},"
            f"blas__ldflags={os.environ.get('PEER_BLAS', '-lopenblas')}")


def dataset(train_rows: int, valid_rows: int) -> Path:
    """The protocol's rows (the first of each split, as dlexp's bench takes them) in the tutorials' format."""
    out = Path(os.environ.get("PEER_DATA_DIR", "/tmp/peer-data")) / f"bench-{train_rows}-{valid_rows}.pkl.gz"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        subprocess.run([str(python()), str(seedcode() / "convert_fashion_mnist.py"), "--train-rows", str(train_rows),
                        "--valid-rows", str(valid_rows), "--test-rows", str(valid_rows), "--out", str(tmp)],
                       check=True, capture_output=True, text=True, timeout=600)
        os.replace(tmp, out)
    return out


def run(key: str, epochs: int, train_rows: int, valid_rows: int, timeout: float = 900, threads=None) -> dict:
    """One run of the tutorial of protocol ``key``: {"epochs": [[seconds, foreign], ...], ...} or {"error"}.
    ``threads``: OpenBLAS's and OpenMP's thread count (default: theirs, one a core)."""
    data = dataset(train_rows, valid_rows)
    cmd = [str(python()), str(ROOT / "bench" / "peer_driver.py"), str(seedcode()), MODELS[key], str(epochs), str(data)]
    if key == "sda":
        cmd.append(sda_file())
    env = {**os.environ, "PYTENSOR_FLAGS": flags(), "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    if threads:
        env.update(OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    return json_result(cmd, "PEER-EPOCHS ", timeout, env=env)
