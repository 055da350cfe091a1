"""Unit tests of the IDX reader and the preprocessing (no MNIST files needed)."""

import gzip
import os
import struct
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import idx  # noqa: E402


def idx_bytes(arr: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


class IdxTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)

    def write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.dir.name, name)
        with (gzip.open if name.endswith(".gz") else open)(path, "wb") as f:
            f.write(data)
        return path

    def test_roundtrip_uint8_and_gzip(self):
        a = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
        for name in ("a.idx", "a.idx.gz"):
            got = idx.read_idx(self.write(name, idx_bytes(a)), expect_ndim=3)
            np.testing.assert_array_equal(got, a)

    def test_int32_big_endian(self):
        a = np.array([1, -2, 70000], dtype=np.int32)
        got = idx.read_idx(self.write("b.idx", idx_bytes(a, 0x0C)))
        np.testing.assert_array_equal(got, a)

    def test_bad_magic(self):
        path = self.write("c.idx", b"\x01\x00\x08\x01\x00\x00\x00\x01\x05")
        with self.assertRaisesRegex(idx.IdxError, "bad magic"):
            idx.read_idx(path)

    def test_unknown_type(self):
        with self.assertRaisesRegex(idx.IdxError, "element type"):
            idx.read_idx(self.write("d.idx", b"\x00\x00\x07\x01\x00\x00\x00\x00"))

    def test_truncated_and_trailing(self):
        good = idx_bytes(np.zeros((3, 4), dtype=np.uint8))
        with self.assertRaisesRegex(idx.IdxError, "truncated"):
            idx.read_idx(self.write("e.idx", good[:-1]))
        with self.assertRaisesRegex(idx.IdxError, "trailing"):
            idx.read_idx(self.write("f.idx", good + b"\x00"))
        with self.assertRaisesRegex(idx.IdxError, "too short"):
            idx.read_idx(self.write("g.idx", b"\x00\x00"))

    def test_wrong_ndim(self):
        with self.assertRaisesRegex(idx.IdxError, "expected 3"):
            idx.read_idx(self.write("h.idx", idx_bytes(np.zeros(5, np.uint8))), expect_ndim=3)

    def test_missing_file_names_the_flag(self):
        with self.assertRaisesRegex(idx.IdxError, "--data"):
            idx.read_idx(os.path.join(self.dir.name, "nope"))

    def test_load_mnist_checks_counts_and_labels(self):
        imgs = np.zeros((3, 28, 28), np.uint8)
        self.write("t10k-images-idx3-ubyte", idx_bytes(imgs))
        self.write("t10k-labels-idx1-ubyte", idx_bytes(np.array([1, 2], np.uint8)))
        with self.assertRaisesRegex(idx.IdxError, "3 images but"):
            idx.load_mnist(self.dir.name, "test")
        self.write("t10k-labels-idx1-ubyte", idx_bytes(np.array([1, 2, 10], np.uint8)))
        with self.assertRaisesRegex(idx.IdxError, "out of range"):
            idx.load_mnist(self.dir.name, "test")
        self.write("t10k-labels-idx1-ubyte", idx_bytes(np.array([1, 2, 9], np.uint8)))
        x, y = idx.load_mnist(self.dir.name, "test")
        self.assertEqual((x.shape, y.dtype), ((3, 28, 28), np.int64))

    def test_preprocess(self):
        x = idx.preprocess(np.array([[[0, 255]]], dtype=np.uint8))
        self.assertEqual((x.dtype, x.shape), (np.float32, (1, 1, 1, 2)))
        self.assertAlmostEqual(float(x[0, 0, 0, 0]), -0.1307 / 0.3081, places=6)
        self.assertAlmostEqual(float(x[0, 0, 0, 1]), (1 - 0.1307) / 0.3081, places=6)


class PolyTest(unittest.TestCase):
    def test_horner_matches_power_sum(self):
        import torch
        import models as M
        x = torch.linspace(-7, 7, 57, dtype=torch.float64)
        for coeffs in ([0, 2, 1], [0, 0, 1], [0.5626, 0.5, 0.0781, 0.0], [1, -2, 0, 0.25]):
            want = sum(c * x ** i for i, c in enumerate(coeffs))
            torch.testing.assert_close(M.Poly(coeffs)(x), want)

    def test_resolve_fixed_and_errors(self):
        import models as M
        self.assertEqual(M.resolve_activation("x2+2x").coeffs, [0.0, 2.0, 1.0])
        self.assertEqual(M.resolve_activation("poly", [1, 2]).coeffs, [1.0, 2.0])
        with self.assertRaises(ValueError):
            M.resolve_activation("poly")
        with self.assertRaises(ValueError):
            M.resolve_activation("sigmoidish")


if __name__ == "__main__":
    unittest.main()
