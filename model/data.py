"""MNIST from its four IDX ``.gz`` files, read with numpy and checked against ``SHA256SUMS``.

The folder comes from ``data_dir``, else ``STN_DATA_DIR``, else ``../shared/data/mnist`` beside the repository.
``download()`` fetches the same files from public mirrors for users with a network; tests never call it.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import urllib.request
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
# MD5 of the original files as the public mirrors serve them (the same values torchvision checks).
# A folder with a SHA256SUMS file (like ../shared/data/mnist) is checked against that file instead.
MIRROR_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
LABELS = [str(i) for i in range(10)]
MEAN, STD = 0.1307, 0.3081  # of MNIST-train pixels in [0, 1]


class DataError(RuntimeError):
    pass


def default_data_dir() -> Path:
    env = os.environ.get("STN_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def _digest(path: Path, algo: str = "sha256") -> str:
    h = hashlib.new(algo)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def expected_checksums(data_dir: Path) -> dict[str, str]:
    sums = data_dir / "SHA256SUMS"
    if not sums.exists():
        raise DataError(f"{sums} is missing: the files cannot be verified")
    out = {}
    for line in sums.read_text().splitlines():
        if line.strip():
            digest, name = line.split()
            out[name.lstrip("*")] = digest
    return out


def verify(data_dir: Path) -> dict[str, str]:
    """Check every file's SHA-256; return ``{file: sha256}``. Raise ``DataError`` naming what is wrong."""
    for name in FILES.values():
        if not (data_dir / name).exists():
            raise DataError(f"{data_dir / name} is missing (set --data-dir or STN_DATA_DIR, or run "
                            "`stn-train download --data-dir DIR`)")
    expected = expected_checksums(data_dir)
    got = {}
    for name in FILES.values():
        path = data_dir / name
        digest = _digest(path)
        if digest != expected.get(name):
            raise DataError(f"{path}: sha256 {digest} does not match the expected {expected[name]}")
        got[name] = digest
    return got


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path}: {data.size} values for dims {tuple(dims)}")
    return data.reshape(tuple(dims)).copy()  # writable, owned


def load_mnist(data_dir: str | Path | None = None, check: bool = True) -> dict[str, np.ndarray | dict[str, str]]:
    """``{'train_images': uint8 (60000, 28, 28), 'train_labels', 'test_images', 'test_labels', 'checksums'}``."""
    folder = Path(data_dir) if data_dir else default_data_dir()
    checksums = verify(folder) if check else {}
    out: dict[str, np.ndarray | dict[str, str]] = {key: read_idx(folder / name) for key, name in FILES.items()}
    out["checksums"] = checksums
    return out


def download(data_dir: str | Path) -> Path:
    """Fetch the four files from the first mirror that answers (MD5-checked), then write SHA256SUMS."""
    folder = Path(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES.values():
        target = folder / name
        if target.exists() and _digest(target, "md5") == MIRROR_MD5[name]:
            continue
        for mirror in MIRRORS:
            try:
                log.info("downloading %s%s", mirror, name)
                urllib.request.urlretrieve(mirror + name, target)
            except OSError as exc:
                log.warning("%s%s failed: %s", mirror, name, exc)
                continue
            if _digest(target, "md5") == MIRROR_MD5[name]:
                break
            log.warning("%s%s: checksum mismatch", mirror, name)
        else:
            raise DataError(f"could not download a verified {name} from any mirror")
    lines = [f"{_digest(folder / name)}  {name}" for name in FILES.values()]
    (folder / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    verify(folder)
    return folder
