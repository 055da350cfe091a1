#!/usr/bin/env python3
"""The synthetic colour data set ("shapes10"), generated deterministically, offline.

No real colour image data set can be had here: nothing may be downloaded at run time,
and neither Debian (``apt-cache search cifar`` / ``imagenet`` / ``image dataset``: no
package; ``dataset-fashion-mnist`` is grey) nor the npm package lists ship one. So the
training agent makes its own: 32×32 RGB images of one coloured shape on a varied
background, 10 classes in which **colour and shape both matter** — every shape comes in
two hues and every hue is worn by two or three shapes, so neither alone names the class:

    class  shape     hue            class  shape     hue
      0    disc      red              5    triangle  blue
      1    disc      blue             6    ring      yellow
      2    square    red              7    ring      blue
      3    square    green            8    cross     yellow
      4    triangle  green            9    cross     red

Each image draws, from its own random stream:

* a background: a desaturated colour of any hue (saturation 0–0.45, value 0.15–0.95)
  tinted blue-green (R × 0.8, G × 0.95, B × 1.1), a linear gradient in a random direction, with probability 1/2 faint stripes (random
  period and angle), with probability 1/2 a small blob of any colour (a distractor);
* the shape: centre anywhere in the middle 12×12 pixels, size 5–11 pixels (the disc's
  radius; the others' matching sizes), any rotation, its hue jittered by ±12°,
  saturation 0.65–1, value 0.55–1, a shading gradient across it, anti-aliased edges;
* Gaussian noise of σ 0.02–0.08 (5–20 grey levels) on every channel independently.

The channels' statistics differ (the background tint; red is the most frequent hue of
the shapes), so the per-channel mean and standard deviation recorded with the model
matter.

**Determinism.** Image ``i`` of a split depends only on (the split's seed, ``i``): its
generator is ``numpy.random.Generator(PCG64(SeedSequence([SEED, split, i])))`` and every
draw is ``Generator.random`` (PCG64's stream and ``random()`` = top 53 bits / 2⁵³ are
fixed by numpy's policy); normal noise is Box–Muller from those uniforms. Labels are
``i % 10``. The pixels are ``round(255 · clip(value, 0, 1))`` as uint8, HWC (R, G, B).

Command line (from the repository root)::

    /usr/bin/python3 training/colour_data.py --split test --count 200 --png DIR
    /usr/bin/python3 training/colour_data.py --split train --count 300 --idx FILE.idx
    /usr/bin/python3 training/colour_data.py --split test --count 200 --sha256

``--idx`` writes uint8 [N, 32, 32, 3] (HWC), labels beside it as FILE-labels.idx
([N] uint8). ``--png`` writes DIR/NNNN.png (8-bit RGB, no colour-space chunk) and
DIR/labels.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import struct
import sys
import zlib
from typing import List, Optional, Tuple

import numpy as np

SIZE = 32
CHANNELS = 3
SEED = 20261130
SPLITS = {"train": 1, "test": 2}
# the full sets training/train.py uses (like CIFAR-10's sizes)
TRAIN_COUNT = 50_000
TEST_COUNT = 10_000

# backgrounds lean blue-green (as sky and foliage do), so the channels' statistics differ
BACKGROUND_TINT = np.array([0.8, 0.95, 1.1])
HUES = {"red": 0.0, "yellow": 55.0, "green": 120.0, "blue": 225.0}
CLASSES: List[Tuple[str, str]] = [
    ("disc", "red"), ("disc", "blue"),
    ("square", "red"), ("square", "green"),
    ("triangle", "green"), ("triangle", "blue"),
    ("ring", "yellow"), ("ring", "blue"),
    ("cross", "yellow"), ("cross", "red"),
]
CLASS_NAMES = [f"{hue} {shape}" for shape, hue in CLASSES]

# pixel-centre coordinates, shared by every image
_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64) + 0.5


class _Draws:
    """Uniform draws from one image's stream (only Generator.random is used)."""

    def __init__(self, seed_words):
        self.rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed_words)))

    def u(self, lo: float = 0.0, hi: float = 1.0) -> float:
        return lo + (hi - lo) * float(self.rng.random())

    def chance(self, p: float) -> bool:
        return float(self.rng.random()) < p

    def normal(self, shape) -> np.ndarray:
        """Standard normal by Box–Muller (1 − u keeps the logarithm finite)."""
        u1 = self.rng.random(shape)
        u2 = self.rng.random(shape)
        return np.sqrt(-2.0 * np.log(1.0 - u1)) * np.cos(2.0 * math.pi * u2)


def hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    """h in degrees, s and v in 0..1 -> RGB in 0..1."""
    h = (h % 360.0) / 60.0
    c = v * s
    x = c * (1.0 - abs(h % 2.0 - 1.0))
    r, g, b = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(h) % 6]
    m = v - c
    return np.array([r + m, g + m, b + m])


def shape_sdf(shape: str, px: np.ndarray, py: np.ndarray, size: float) -> np.ndarray:
    """Signed distance (pixels, negative inside) of ``shape`` of size ``size`` centred at
    the origin, in the shape's rotated frame (px, py)."""
    if shape == "disc":
        return np.hypot(px, py) - size
    if shape == "square":
        return np.maximum(np.abs(px), np.abs(py)) - 0.85 * size
    if shape == "triangle":  # equilateral, inradius 0.6·size
        d = None
        for k in range(3):
            a = math.pi / 2 + k * 2 * math.pi / 3
            e = px * math.cos(a) + py * math.sin(a)
            d = e if d is None else np.maximum(d, e)
        return d - 0.6 * size
    if shape == "ring":
        return np.abs(np.hypot(px, py) - 0.72 * size) - 0.28 * size
    if shape == "cross":
        arm, half = size, 0.3 * size
        h = np.maximum(np.abs(px) - arm, np.abs(py) - half)
        v = np.maximum(np.abs(px) - half, np.abs(py) - arm)
        return np.minimum(h, v)
    raise ValueError(f"unknown shape {shape!r}")


def _coverage(sdf: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of a pixel by the region sdf < 0."""
    return np.clip(0.5 - sdf, 0.0, 1.0)


def render(split: str, index: int, seed: int = SEED) -> Tuple[np.ndarray, int]:
    """Image ``index`` of ``split``: (uint8 [32, 32, 3] RGB, label)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, not {split!r}")
    if index < 0:
        raise ValueError(f"index must be at least 0, not {index}")
    label = index % len(CLASSES)
    shape, hue_name = CLASSES[label]
    d = _Draws([seed, SPLITS[split], index])

    # background: a desaturated colour, tinted blue-green, with a gradient
    bg = hsv_to_rgb(d.u(0, 360), d.u(0.0, 0.45), d.u(0.15, 0.95)) * BACKGROUND_TINT
    angle = d.u(0, 2 * math.pi)
    ramp = ((_XX - SIZE / 2) * math.cos(angle) + (_YY - SIZE / 2) * math.sin(angle)) / SIZE
    img = bg[None, None, :] + (d.u(-0.3, 0.3) * ramp)[:, :, None]
    if d.chance(0.5):  # faint stripes
        period, phase, theta = d.u(3.0, 9.0), d.u(0, 2 * math.pi), d.u(0, math.pi)
        wave = np.sin(2 * math.pi * (_XX * math.cos(theta) + _YY * math.sin(theta)) / period + phase)
        img = img + (d.u(0.03, 0.1) * wave)[:, :, None] * hsv_to_rgb(d.u(0, 360), d.u(0, 1), 1.0)
    if d.chance(0.5):  # a small distractor blob of any colour
        bx, by, br = d.u(2, SIZE - 2), d.u(2, SIZE - 2), d.u(1.5, 3.5)
        blob = _coverage(np.hypot(_XX - bx, _YY - by) - br)
        colour = hsv_to_rgb(d.u(0, 360), d.u(0.2, 1.0), d.u(0.3, 1.0))
        img = img * (1 - blob[:, :, None]) + blob[:, :, None] * colour

    # the shape
    cx, cy = d.u(10, 22), d.u(10, 22)
    size = d.u(5, 11)
    rot = d.u(0, 2 * math.pi)
    dx, dy = _XX - cx, _YY - cy
    px = dx * math.cos(rot) + dy * math.sin(rot)
    py = -dx * math.sin(rot) + dy * math.cos(rot)
    alpha = _coverage(shape_sdf(shape, px, py, size))
    colour = hsv_to_rgb(HUES[hue_name] + d.u(-12, 12), d.u(0.65, 1.0), d.u(0.55, 1.0))
    s_angle = d.u(0, 2 * math.pi)
    shading = 1.0 + d.u(0.0, 0.25) * (dx * math.cos(s_angle) + dy * math.sin(s_angle)) / size
    fg = colour[None, None, :] * shading[:, :, None]
    img = img * (1 - alpha[:, :, None]) + alpha[:, :, None] * fg

    # sensor noise
    img = img + d.u(0.02, 0.08) * d.normal((SIZE, SIZE, CHANNELS))
    return np.rint(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8), label


def generate(split: str, count: int, start: int = 0, seed: int = SEED) -> Tuple[np.ndarray, np.ndarray]:
    """Images ``start`` .. ``start + count − 1`` of ``split``: (uint8 [N, 32, 32, 3], int64 [N])."""
    if count < 0:
        raise ValueError(f"count must be at least 0, not {count}")
    images = np.empty((count, SIZE, SIZE, CHANNELS), np.uint8)
    labels = np.empty(count, np.int64)
    for k in range(count):
        images[k], labels[k] = render(split, start + k, seed)
    return images, labels


def channel_stats(images: np.ndarray) -> Tuple[List[float], List[float]]:
    """Per-channel mean and standard deviation of pixel/255 over uint8 [N, H, W, 3]."""
    x = images.reshape(-1, CHANNELS).astype(np.float64) / 255.0
    return x.mean(axis=0).tolist(), x.std(axis=0).tolist()


def preprocess(images: np.ndarray, mean, std) -> np.ndarray:
    """uint8 [N, 32, 32, 3] (HWC) -> float32 [N, 3, 32, 32] (NCHW),
    ``(pixel / 255 − mean[c]) / std[c]``, in float32 in exactly this order (as
    training/idx.py does for MNIST), so that other implementations can match it."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != CHANNELS:
        raise ValueError(f"expected uint8 [N,H,W,3] images, got {images.dtype} {images.shape}")
    x = images.astype(np.float32) / np.float32(255.0)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def digest(images: np.ndarray, labels: np.ndarray) -> str:
    """SHA-256 of the images' bytes followed by the labels as uint8."""
    h = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    h.update(labels.astype(np.uint8).tobytes())
    return h.hexdigest()


def png_bytes(image: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of uint8 [H, W, 3]: no interlace, filter 0 on every row, no
    gamma or colour-space chunk (so browsers decode the bytes unchanged)."""
    h, w, c = image.shape
    if image.dtype != np.uint8 or c != 3:
        raise ValueError(f"expected uint8 [H,W,3], got {image.dtype} {image.shape}")

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    raw = b"".join(b"\x00" + image[y].tobytes() for y in range(h))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


def idx_bytes(arr: np.ndarray) -> bytes:
    """An IDX file of uint8 ``arr`` (any rank)."""
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + np.ascontiguousarray(arr, np.uint8).tobytes()


def write_pngs(directory: str, images: np.ndarray, labels: np.ndarray, split: str,
               start: int = 0) -> List[str]:
    os.makedirs(directory, exist_ok=True)
    names = []
    for k, (image, label) in enumerate(zip(images, labels)):
        name = f"{start + k:04d}.png"
        with open(os.path.join(directory, name), "wb") as f:
            f.write(png_bytes(image))
        names.append(name)
    return names


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--split", choices=sorted(SPLITS), default="test")
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--png", metavar="DIR", help="write DIR/NNNN.png and DIR/labels.json")
    p.add_argument("--idx", metavar="FILE", help="write FILE (uint8 [N,32,32,3]) and "
                                                 "FILE's name with -labels.idx")
    p.add_argument("--sha256", action="store_true", help="print the digest of the images")
    args = p.parse_args(argv)
    images, labels = generate(args.split, args.count, args.start)
    if args.png:
        names = write_pngs(args.png, images, labels, args.split, args.start)
        with open(os.path.join(args.png, "labels.json"), "w") as f:
            json.dump({"split": args.split, "start": args.start, "classes": CLASS_NAMES,
                       "images": [{"file": n, "label": int(y)} for n, y in zip(names, labels)]},
                      f, indent=1)
            f.write("\n")
    if args.idx:
        base = args.idx[:-4] if args.idx.endswith(".idx") else args.idx
        with open(args.idx, "wb") as f:
            f.write(idx_bytes(images))
        with open(base + "-labels.idx", "wb") as f:
            f.write(idx_bytes(labels.astype(np.uint8)))
    if args.sha256 or not (args.png or args.idx):
        print(digest(images, labels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
