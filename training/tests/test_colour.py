"""Unit tests of the synthetic colour set (training/colour_data.py) and of colour-poly
(build, batch-norm folding, export on a few generated images, the input spec file)."""

import contextlib
import io
import json
import os
import struct
import sys
import tempfile
import unittest
import zlib

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import colour_data as C  # noqa: E402
import models as M  # noqa: E402
import train as T  # noqa: E402

SQUARE = M.resolve_activation("square")


def load_json(path: str):
    with open(path) as f:
        return json.load(f)


def read_png(blob: bytes) -> np.ndarray:
    """The pixels of a PNG written by colour_data.png_bytes (8-bit RGB, filter 0)."""
    assert blob[:8] == b"\x89PNG\r\n\x1a\n"
    at, width, height, idat = 8, 0, 0, b""
    while at < len(blob):
        (length,), kind = struct.unpack(">I", blob[at:at + 4]), blob[at + 4:at + 8]
        data = blob[at + 8:at + 8 + length]
        (crc,) = struct.unpack(">I", blob[at + 8 + length:at + 12 + length])
        assert crc == zlib.crc32(kind + data) & 0xFFFFFFFF, kind
        if kind == b"IHDR":
            width, height = struct.unpack(">II", data[:8])
            assert data[8:] == bytes([8, 2, 0, 0, 0])
        elif kind == b"IDAT":
            idat += data
        at += 12 + length
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + 3 * width)
    assert not raw[:, 0].any()
    return raw[:, 1:].reshape(height, width, 3)


class ColourDataTest(unittest.TestCase):
    def test_deterministic_and_random_access(self):
        a, ya = C.generate("test", 12)
        b, yb = C.generate("test", 12)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ya, yb)
        c, yc = C.generate("test", 4, start=8)  # image i depends on i only
        np.testing.assert_array_equal(a[8:], c)
        np.testing.assert_array_equal(ya[8:], yc)
        self.assertEqual(C.digest(a, ya), C.digest(b, yb))

    def test_splits_and_seeds_differ(self):
        test, _ = C.generate("test", 4)
        train, _ = C.generate("train", 4)
        other, _ = C.generate("test", 4, seed=C.SEED + 1)
        self.assertFalse((test == train).all(axis=(1, 2, 3)).any())
        self.assertFalse((test == other).all(axis=(1, 2, 3)).any())

    def test_shapes_labels_and_classes(self):
        x, y = C.generate("train", 30)
        self.assertEqual((x.shape, x.dtype), ((30, 32, 32, 3), np.uint8))
        np.testing.assert_array_equal(y, np.arange(30) % 10)
        self.assertEqual(len(C.CLASSES), 10)
        self.assertEqual(len(set(C.CLASSES)), 10)
        # neither the shape nor the hue alone names a class
        for shape in {s for s, _ in C.CLASSES}:
            self.assertGreaterEqual(sum(s == shape for s, _ in C.CLASSES), 2)
        for hue in {h for _, h in C.CLASSES}:
            self.assertGreaterEqual(sum(h == hue for _, h in C.CLASSES), 2)

    def test_the_shape_wears_its_hue(self):
        # the pixels that differ most from the image's median colour are the shape's
        x, y = C.generate("test", 40)
        hue_channel = {"red": 0, "green": 1, "blue": 2}
        for image, label in zip(x, y):
            hue = C.CLASSES[label][1]
            if hue == "yellow":
                continue
            px = image.reshape(-1, 3).astype(float)
            far = px[np.argsort(-np.abs(px - np.median(px, axis=0)).sum(1))[:20]]
            self.assertEqual(int(np.argmax(far.mean(0))), hue_channel[hue], (label, far.mean(0)))

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "split"):
            C.render("validation", 0)
        with self.assertRaisesRegex(ValueError, "index"):
            C.render("test", -1)
        with self.assertRaisesRegex(ValueError, "count"):
            C.generate("test", -1)
        with self.assertRaisesRegex(ValueError, "uint8"):
            C.preprocess(np.zeros((1, 32, 32), np.uint8), [0], [1])

    def test_png_and_idx_round_trip(self):
        x, y = C.generate("test", 3)
        for image in x:
            np.testing.assert_array_equal(read_png(C.png_bytes(image)), image)
        blob = C.idx_bytes(x)
        self.assertEqual(blob[:4], bytes([0, 0, 8, 4]))
        self.assertEqual(struct.unpack(">4I", blob[4:20]), (3, 32, 32, 3))
        np.testing.assert_array_equal(np.frombuffer(blob[20:], np.uint8).reshape(x.shape), x)

    def test_preprocess_is_float32_in_training_order(self):
        image = np.zeros((1, 32, 32, 3), np.uint8)
        image[0, 0, 1] = (255, 128, 7)
        mean, std = [0.4, 0.45, 0.5], [0.22, 0.23, 0.26]
        x = C.preprocess(image, mean, std)
        self.assertEqual((x.shape, x.dtype), ((1, 3, 32, 32), np.float32))
        f = np.float32
        for c, v in enumerate((255, 128, 7)):
            want = (f(v) / f(255) - f(mean[c])) / f(std[c])
            self.assertEqual(x[0, c, 0, 1], want)
            self.assertEqual(x[0, c, 0, 0], (f(0) - f(mean[c])) / f(std[c]))

    def test_channel_statistics_differ(self):
        mean, std = C.channel_stats(C.generate("train", 500)[0])
        self.assertLess(mean[0] + 0.05, mean[2])  # the blue-green background tint


class ColourPolyTest(unittest.TestCase):
    def test_builds_all_polynomial(self):
        for bn in (True, False):
            model = M.build_model("colour-poly", SQUARE, batch_norm=bn).eval()
            self.assertEqual(tuple(model(torch.zeros(2, 3, 32, 32)).shape), (2, 10))
            kinds = {type(m) for m in model.modules()}
            self.assertFalse(kinds & {torch.nn.ReLU, torch.nn.MaxPool2d})
            self.assertEqual(sum(isinstance(m, M.Poly) for m in model.modules()), 2)
        with self.assertRaisesRegex(ValueError, "polynomial"):
            M.build_model("colour-poly", M.resolve_activation("relu"))
        self.assertEqual(M.input_shape("colour-poly"), (3, 32, 32))
        self.assertEqual(M.input_shape("deep-poly"), (1, 28, 28))

    def test_protect_flags(self):
        spec = T.colour_input_spec([0.4027, 0.4554, 0.5021], [0.2206, 0.2314, 0.2655])
        self.assertEqual(T.protect_flags(spec),
                         "--channels 3 --input-size 32x32 --layout nchw --scale 255 "
                         "--mean 0.4027,0.4554,0.5021 --std 0.2206,0.2314,0.2655 "
                         "--fit center-crop")
        self.assertEqual(sorted(spec), sorted(["channels", "height", "width", "layout", "scale",
                                               "mean", "std", "fit", "digitize"]))

    def test_train_and_export_end_to_end(self):
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "c.onnx")
            with contextlib.redirect_stdout(io.StringIO()):
                T.main(["--model", "colour-poly", "--epochs", "1", "--limit", "64",
                        "--batch-size", "32", "--threads", "1", "--out", out])
            import onnx
            m = onnx.load(out)
            ops = {n.op_type for n in m.graph.node}
            self.assertEqual(ops, {"Conv", "Mul", "AveragePool", "Flatten", "Gemm"})
            dims = [d.dim_param or d.dim_value
                    for d in m.graph.input[0].type.tensor_type.shape.dim]
            self.assertEqual(dims, ["N", 3, 32, 32])
            meta = {p.key: p.value for p in m.metadata_props}
            metrics, spec_file = (load_json(os.path.join(d, n)) for n in ("c.json", "c.input.json"))
            self.assertEqual(json.loads(meta["sealed-edge.input-spec"]), metrics["inputSpec"])
            self.assertEqual(spec_file["inputSpec"], metrics["inputSpec"])
            self.assertEqual(meta["sealed-edge.split"], "/features/flatten/Flatten_output_0")
            self.assertEqual(metrics["trainImages"], 64)
            self.assertEqual(metrics["testTotal"], C.TEST_COUNT)
            self.assertTrue(spec_file["protectFlags"].startswith("--channels 3 "))
            x, _ = C.generate("train", 64)
            mean, _ = C.channel_stats(x)
            self.assertEqual(metrics["inputSpec"]["mean"], [round(v, 4) for v in mean])

    def test_shift_and_data_are_refused(self):
        for extra in (["--shift", "1"], ["--data", "/tmp"]):
            with self.assertRaises(SystemExit):
                T.main(["--model", "colour-poly", "--epochs", "1"] + extra)


if __name__ == "__main__":
    unittest.main()
