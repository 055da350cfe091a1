"""Unit tests of paper-cnn-he and deep-poly (build, batch-norm folding, ONNX export) and
of the training options --shift and --lr-schedule cosine (no MNIST files needed: the
end-to-end test writes a tiny fake MNIST)."""

import contextlib
import io
import json
import os
import struct
import sys
import tempfile
import unittest
from argparse import Namespace

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import idx  # noqa: E402
import models as M  # noqa: E402
import train as T  # noqa: E402

X2_2X = M.resolve_activation("x2+2x")
SQUARE = M.resolve_activation("square")


def write_idx(path: str, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    with open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def fake_mnist(directory: str, n_train: int = 64, n_test: int = 32) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = idx.MNIST_FILES[split]
        write_idx(os.path.join(directory, images), rng.integers(0, 256, (n, 28, 28)))
        write_idx(os.path.join(directory, labels), np.arange(n) % 10)


class PaperCnnHeTest(unittest.TestCase):
    def test_builds_with_and_without_batch_norm(self):
        for bn in (True, False):
            model = M.build_model("paper-cnn-he", X2_2X, batch_norm=bn).eval()
            self.assertEqual(tuple(model(torch.zeros(2, 1, 28, 28)).shape), (2, 10))
            kinds = {type(m) for m in model.modules()}
            self.assertFalse(kinds & {torch.nn.ReLU, torch.nn.MaxPool2d})
            self.assertEqual(sum(isinstance(m, M.Poly) for m in model.modules()), 5)
            self.assertEqual(sum(isinstance(m, torch.nn.AvgPool2d) for m in model.modules()), 2)
            self.assertEqual(torch.nn.BatchNorm2d in kinds, bn)

    def test_needs_a_polynomial(self):
        for name in ("relu", "none"):
            with self.assertRaisesRegex(ValueError, "polynomial"):
                M.build_model("paper-cnn-he", M.resolve_activation(name))
        with self.assertRaisesRegex(ValueError, "batch-norm"):
            M.build_model("small-poly", X2_2X, batch_norm=True)

    def test_fold_batch_norm_keeps_the_function_and_the_names(self):
        torch.manual_seed(0)
        model = M.build_model("paper-cnn-he", X2_2X, batch_norm=True)
        for m in model.modules():  # non-trivial statistics and affine parameters
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)
        model.eval()
        x = torch.randn(4, 1, 28, 28)
        with torch.no_grad():
            want = model(x)
            M.fold_batch_norm(model)
            got = model(x)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        plain = M.build_model("paper-cnn-he", X2_2X, batch_norm=False)
        self.assertEqual(list(model.state_dict()), list(plain.state_dict()))


class TrainingOptionsTest(unittest.TestCase):
    def test_random_shift_moves_whole_images_within_range(self):
        x = torch.from_numpy(idx.preprocess(
            np.random.default_rng(1).integers(1, 256, (20, 28, 28)).astype(np.uint8)))
        out = T.random_shift(x, 2, torch.Generator().manual_seed(3))
        self.assertEqual(out.shape, x.shape)
        bg = float(idx.preprocess(np.zeros((1, 1, 1), np.uint8))[0, 0, 0, 0])
        padded = torch.nn.functional.pad(x, (2, 2, 2, 2), value=bg)
        shifts = set()
        for i in range(20):
            found = [(dy, dx) for dy in range(5) for dx in range(5)
                     if torch.equal(out[i], padded[i, :, dy:dy + 28, dx:dx + 28])]
            self.assertEqual(len(found), 1)
            shifts.add(found[0])
        self.assertGreater(len(shifts), 1)

    def test_cosine_schedule_decays_to_zero_per_batch(self):
        model = torch.nn.Linear(2, 2)
        args = Namespace(lr=1e-3, weight_decay=0.01, lr_schedule="cosine", lr_decay=0.7,
                         epochs=2, batch_size=10)
        opt, sched = T.make_optimizer(model, args, steps_per_epoch=5)
        self.assertIsInstance(opt, torch.optim.AdamW)
        lrs = []
        for _ in range(10):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        self.assertAlmostEqual(lrs[0], 1e-3)
        self.assertAlmostEqual(lrs[5], 0.5e-3)
        self.assertTrue(all(a > b for a, b in zip(lrs, lrs[1:])))
        self.assertAlmostEqual(opt.param_groups[0]["lr"], 0.0)


class PaperCnnHeExportTest(unittest.TestCase):
    def test_train_and_export_has_only_he_friendly_ops(self):
        import onnx

        with tempfile.TemporaryDirectory() as d:
            fake_mnist(d)
            out = os.path.join(d, "he.onnx")
            with contextlib.redirect_stdout(io.StringIO()):
                T.main(["--model", "paper-cnn-he", "--epochs", "1", "--batch-size", "16",
                        "--shift", "1", "--lr-schedule", "cosine", "--threads", "1",
                        "--data", d, "--out", out])
            model = onnx.load(out)
            with open(os.path.join(d, "he.json")) as f:
                metrics = json.load(f)
            # the folded weights load back into the batch-norm-free model
            T.load_onnx_weights(M.build_model("paper-cnn-he", X2_2X), out)
        ops = [n.op_type for n in model.graph.node]
        self.assertFalse(set(ops) & {"MaxPool", "Relu", "BatchNormalization", "Dropout",
                                     "Softmax", "Pad"})
        self.assertLessEqual(set(ops), {"Conv", "Mul", "Add", "Constant", "AveragePool",
                                        "Flatten", "Reshape", "Gemm"})
        self.assertEqual(ops.count("Conv"), 4)
        self.assertEqual(ops.count("AveragePool"), 2)
        self.assertEqual(ops.count("Gemm"), 2)
        # x^2+2x five times, in Horner form: Add(z, 2) then Mul(that, z)
        self.assertEqual((ops.count("Add"), ops.count("Mul")), (5, 5))
        for c in (n for n in model.graph.node if n.op_type == "Constant"):
            value = onnx.numpy_helper.to_array(c.attribute[0].t)
            self.assertEqual((value.shape, float(value)), ((), 2.0))
        meta = {p.key: p.value for p in model.metadata_props}
        self.assertEqual(meta["sealed-edge.model"], "paper-cnn-he")
        self.assertEqual(json.loads(meta["sealed-edge.coeffs"]), [0.0, 2.0, 1.0])
        self.assertIn("sealed-edge.split", meta)
        self.assertTrue(metrics["batchNorm"] and metrics["batchNormFolded"])
        self.assertEqual(metrics["parameters"], 889834)
        self.assertEqual(metrics["onnx"]["argmaxAgree"], metrics["onnx"]["images"])


class DeepPolyTest(unittest.TestCase):
    def test_builds_with_and_without_batch_norm(self):
        for bn in (True, False):
            model = M.build_model("deep-poly", SQUARE, batch_norm=bn).eval()
            self.assertEqual(tuple(model(torch.zeros(2, 1, 28, 28)).shape), (2, 10))
            self.assertEqual(tuple(model.features[:-1](torch.zeros(1, 1, 28, 28)).shape),
                             (1, 16, 5, 5))
            kinds = {type(m) for m in model.modules()}
            self.assertFalse(kinds & {torch.nn.ReLU, torch.nn.MaxPool2d})
            self.assertEqual(sum(isinstance(m, M.Poly) for m in model.modules()), 2)
            self.assertEqual(torch.nn.BatchNorm2d in kinds, bn)
        self.assertEqual(sum(p.numel() for p in model.parameters()), 5386)

    def test_needs_a_polynomial(self):
        for name in ("relu", "none"):
            with self.assertRaisesRegex(ValueError, "polynomial"):
                M.build_model("deep-poly", M.resolve_activation(name))

    def test_fold_batch_norm_keeps_the_function_and_the_names(self):
        torch.manual_seed(0)
        model = M.build_model("deep-poly", SQUARE, batch_norm=True)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)
        model.eval()
        x = torch.randn(4, 1, 28, 28)
        with torch.no_grad():
            want = model(x)
            M.fold_batch_norm(model)
            got = model(x)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        plain = M.build_model("deep-poly", SQUARE, batch_norm=False)
        self.assertEqual(list(model.state_dict()), list(plain.state_dict()))

    def test_train_and_export_has_only_he_friendly_ops(self):
        import onnx

        with tempfile.TemporaryDirectory() as d:
            fake_mnist(d)
            out = os.path.join(d, "deep.onnx")
            with contextlib.redirect_stdout(io.StringIO()):
                T.main(["--model", "deep-poly", "--epochs", "1", "--batch-size", "16",
                        "--shift", "1", "--lr-schedule", "cosine", "--threads", "1",
                        "--data", d, "--out", out])
            model = onnx.load(out)
            with open(os.path.join(d, "deep.json")) as f:
                metrics = json.load(f)
            T.load_onnx_weights(M.build_model("deep-poly", SQUARE), out)
        ops = [n.op_type for n in model.graph.node]
        # x^2 is Mul(z, z): no Constant, no Add, no Pad, no BatchNormalization
        self.assertEqual(ops, ["Conv", "Mul", "Conv", "Mul", "AveragePool", "Flatten", "Gemm"])
        for n in (n for n in model.graph.node if n.op_type == "Mul"):
            self.assertEqual(n.input[0], n.input[1])
        pool = next(n for n in model.graph.node if n.op_type == "AveragePool")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in pool.attribute}
        self.assertEqual((attrs["kernel_shape"], attrs["strides"]), ([2, 2], [2, 2]))
        self.assertFalse(any(attrs.get("pads", [0])) or attrs.get("ceil_mode", 0))
        meta = {p.key: p.value for p in model.metadata_props}
        self.assertEqual(meta["sealed-edge.model"], "deep-poly")
        self.assertEqual(json.loads(meta["sealed-edge.coeffs"]), [0.0, 0.0, 1.0])
        self.assertNotIn("sealed-edge.split", meta)
        self.assertTrue(metrics["batchNorm"] and metrics["batchNormFolded"])
        self.assertEqual(metrics["parameters"], 5386)
        self.assertEqual(metrics["onnx"]["argmaxAgree"], metrics["onnx"]["images"])


if __name__ == "__main__":
    unittest.main()
