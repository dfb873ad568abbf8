"""Where dataset files come from: local lookup, then a verified download.

Lookup order (:func:`locate`): ``dataset.path``, ``$DLEXP_DATA``, the cache
(``dataset.cache_dir``, else ``$DLEXP_CACHE``, else ``~/.cache/dlexp``), known
system paths (Debian's ``dataset-fashion-mnist``, Keras' ``~/.keras/datasets``),
then, if ``dataset.download``, each file from each mirror in turn into the
cache. Downloads are streamed to a temp file, md5-checked against the official
sums and only then renamed into place, so a bad or cut transfer leaves nothing
behind. Files found locally are not md5-checked (Debian recompresses its .gz
files); the readers validate their structure instead.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from dlexp.safe_pickle import atomic_write
from dlexp.data.formats import DataError

log = logging.getLogger(__name__)
TIMEOUT_S = 60
IDX_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@dataclass(frozen=True)
class FileSet:
    """One dataset's files: IDX names with their md5, mirrors and where to look."""

    md5: dict                # IDX file name -> md5 of the official .gz
    mirrors: tuple           # base URLs, tried in order
    dirnames: tuple          # subdirectory names under $DLEXP_DATA and the cache
    single_files: tuple = ()  # one-file alternatives to the IDX set (mnist.npz, mnist.pkl.gz)
    idx_at_root: bool = False  # accept IDX files directly in $DLEXP_DATA (MNIST's own names)


FILE_SETS = {
    "mnist": FileSet(
        md5=dict(zip(IDX_NAMES, ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
                                 "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"))),
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        dirnames=("mnist",),
        single_files=("mnist.npz", "mnist.pkl.gz"),
        idx_at_root=True,
    ),
    "fashion_mnist": FileSet(  # same file names as MNIST, so only ever looked up in its own directory
        md5=dict(zip(IDX_NAMES, ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                                 "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12e480ee83cd310"))),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        dirnames=("fashion_mnist", "fashion-mnist"),
    ),
}

# Directories (holding the IDX files) or single files installed by other tools.
SYSTEM_PATHS = {
    "mnist": ["~/.keras/datasets/mnist.npz"],
    "fashion_mnist": ["/usr/share/datasets/fashion-mnist", "~/.keras/datasets/fashion-mnist"],
}

OFFLINE_HINT = ("offline alternatives: dataset=digits (bundled with scikit-learn), or "
                "`apt-get install dataset-fashion-mnist` and dataset=fashion_mnist")


class DownloadError(Exception):
    """One failed transfer (bad checksum, cut connection); the next mirror is tried."""


def cache_root(cache_dir: str | None = None) -> Path:
    """``cache_dir``, else ``$DLEXP_CACHE``, else ``~/.cache/dlexp``."""
    return Path(cache_dir or os.environ.get("DLEXP_CACHE") or "~/.cache/dlexp").expanduser()


def idx_file(directory: Path, name: str) -> Path | None:
    """``directory/name`` or its uncompressed twin (``name`` without .gz), if either exists."""
    for candidate in (directory / name, directory / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _find_in(directory: Path, fs: FileSet, idx: bool = True) -> Path | None:
    """The IDX directory itself or a single-file alternative inside it, if present."""
    if idx and all(idx_file(directory, n) for n in fs.md5):
        return directory
    for name in fs.single_files:
        if (directory / name).is_file():
            return directory / name
    return None


def locate(cfg) -> Path:
    """Find ``cfg.name``'s files: an IDX directory or one file (.npz / .pkl.gz); download if allowed."""
    fs = FILE_SETS[cfg.name]
    if cfg.path:
        path = Path(cfg.path).expanduser()
        if path.is_file():
            return path
        if not path.exists():
            raise DataError(f"dataset.path={cfg.path}: no such file or directory")
        if not path.is_dir():
            raise DataError(f"dataset.path={cfg.path}: not a regular file or a directory")
        found = _find_in(path, fs)
        if found is None:
            wanted = ", ".join(fs.md5) + "".join(f" or {n}" for n in fs.single_files)
            raise DataError(f"dataset.path={cfg.path}: directory does not hold {wanted}")
        return found

    searched = []
    env = os.environ.get("DLEXP_DATA")
    if env:
        root = Path(env).expanduser()
        searched += [(root / d, True) for d in fs.dirnames]
        if fs.idx_at_root or fs.single_files:
            searched.append((root, fs.idx_at_root))
    cache = cache_root(cfg.cache_dir) / cfg.name
    searched.append((cache, True))
    searched += [(Path(p).expanduser(), True) for p in SYSTEM_PATHS.get(cfg.name, [])]
    for place, idx in searched:
        if place.is_file():
            return place
        if place.is_dir() and (found := _find_in(place, fs, idx)) is not None:
            return found

    if cfg.download:
        return download(cfg.name, cache, list(cfg.mirrors) or list(fs.mirrors))
    raise DataError(
        f"{cfg.name}: files not found and dataset.download=false; need {', '.join(fs.md5)}"
        + "".join(f" or {n}" for n in fs.single_files)
        + f"; searched {', '.join(str(p) for p, _ in searched)}; "
        f"put them in a directory and pass dataset.path=DIR (or set DLEXP_DATA=DIR); {OFFLINE_HINT}"
    )


def download(name: str, dest: Path, mirrors: list) -> Path:
    """Download ``name``'s missing IDX files into ``dest``, md5-verified; return ``dest``."""
    fs = FILE_SETS[name]
    dest.mkdir(parents=True, exist_ok=True)
    for fname, md5 in fs.md5.items():
        if (dest / fname).is_file():
            continue
        errors = []
        for base in mirrors:
            url = base.rstrip("/") + "/" + fname
            log.info("downloading %s", url)
            try:
                fetch(url, dest / fname, md5)
                break
            except (OSError, ValueError, http.client.HTTPException, DownloadError) as e:
                errors.append(f"{url}: {str(e).strip() or type(e).__name__}")
        else:
            with contextlib.suppress(OSError):
                dest.rmdir()  # only if empty: earlier verified files stay cached
            raise DataError(f"{name}: could not download {fname} ({'; '.join(errors) or 'no mirrors'}); "
                            f"download it yourself into {dest} or pass dataset.path=DIR; {OFFLINE_HINT}")
    return dest


def fetch(url: str, target: Path, md5: str) -> None:
    """Stream ``url`` into ``target`` atomically; raise DownloadError on a cut transfer or wrong md5."""
    request = urllib.request.Request(url, headers={"User-Agent": "dlexp"})
    digest, size = hashlib.md5(usedforsecurity=False), 0
    with atomic_write(target) as f:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            expected = response.headers.get("Content-Length")
            while chunk := response.read(1 << 16):
                f.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        if expected is not None and size != int(expected):
            raise DownloadError(f"connection closed after {size} of {expected} bytes")
        if digest.hexdigest() != md5:
            raise DownloadError(f"md5 {digest.hexdigest()} does not match the official {md5}")
