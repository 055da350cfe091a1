"""The networks the training agent builds, and their classifier activations.

paper-cnn
    The Keras ``cifar10_cnn`` topology used by Gomez et al. (2019), on 28x28x1 MNIST:

        features:   Conv 1->32 3x3 pad 1 ("same"), ReLU
                    Conv 32->32 3x3 pad 0 ("valid"), ReLU, MaxPool 2x2, Dropout 0.25
                    Conv 32->64 3x3 pad 1, ReLU
                    Conv 64->64 3x3 pad 0, ReLU, MaxPool 2x2, Dropout 0.25
                    Flatten -> 64*5*5 = 1600 features        <- split point
        classifier: FC 1600->512, <activation>, Dropout 0.5, FC 512->10 (logits)

    Only the classifier's activation is selectable; the feature extractor keeps its
    ReLUs and max pooling (it runs in plaintext on the device).

paper-cnn-he
    The same topology made HE-friendly throughout: every ReLU is the selected
    polynomial activation (x^2+2x by default) and both max pools are 2x2 average pools:

        features:   Conv 1->32 3x3 pad 1, BN, act    Conv 32->32 3x3, BN, act,
                    AvgPool 2x2, Dropout 0.25
                    Conv 32->64 3x3 pad 1, BN, act   Conv 64->64 3x3, BN, act,
                    AvgPool 2x2, Dropout 0.25
                    Flatten -> 64*5*5 = 1600 features        <- split point
        classifier: FC 1600->512, BN, act, Dropout 0.5, FC 512->10 (logits)

    The batch norms (on by default, ``--no-batch-norm`` leaves them out) keep the
    stacked polynomials in range while training; ``fold_batch_norm`` folds each into
    the Conv/FC before it, so the exported graph is Conv, Mul/Add, AveragePool,
    Flatten and Gemm only.

small-poly
    A CryptoNets/LoLa-sized network made only of linear layers and polynomials, for
    a later full-model encryption (no max pooling, no ReLU):

        Conv 1->5 5x5 stride 2 pad 1 -> 5x13x13 = 845, x^2, Flatten,
        FC 845->100, x^2, FC 100->10 (logits)

deep-poly
    A deeper all-polynomial CNN for full-model encryption with 5 multiplicative
    levels (Conv, act, Conv, act, AvgPool+FC), 5,386 parameters as exported:

        Conv 1->8 5x5 stride 2 pad 1 -> 8x13x13, BN, x^2,
        Conv 8->16 3x3 -> 16x11x11, BN, x^2,
        AvgPool 2x2 (floor: the last row and column are dropped) -> 16x5x5,
        Flatten -> 400, FC 400->10 (logits)

    The batch norms (on by default, ``--no-batch-norm`` leaves them out) are folded
    into the Convs before the export, as for paper-cnn-he, so the exported graph is
    Conv, Mul (x^2 is x*x; another polynomial adds Add/Constant), AveragePool, Flatten
    and Gemm only (the pool has count_include_pad=False, which exports without a Pad
    node).

colour-poly
    A small all-polynomial colour CNN for the synthetic colour set (3x32x32 input,
    training/colour_data.py), 5 multiplicative levels like small-poly:

        Conv 3->8 5x5 stride 2 pad 2 -> 8x16x16, BN, x^2,
        AvgPool 2x2 -> 8x8x8, Flatten -> 512     <- the automatic split
        FC 512->64, BN, x^2, FC 64->10 (logits)

    The batch norms (on by default) are folded into the Conv and FC 512->64 before the
    export. Split automatically, the device runs the Conv, x^2 and pool in plaintext and
    encrypts FC 512->64, x^2, FC 64->10; at ``--split input`` everything is encrypted
    (the pool folds into the dense layer: 2048->64).

Activations (``--activation``):
    relu, none (identity), x2+2x (x^2 + 2x, the paper's), square (x^2),
    poly (coefficients from ``--coeffs a0,a1,...``), and
    ``<method>-<fn>-<degree>`` such as ``cryptodl-relu-2``: the polynomial that
    ``node bin/sealed-edge.mjs approx --fn <fn> --method <method> --degree <degree>
    --interval -6,6 --json`` prints (``coeffs[i]`` multiplies ``x**i``).

Polynomials are evaluated in Horner form with Python-float constants, so the ONNX
export contains only ``Mul`` and ``Add`` nodes with scalar constants (a coefficient
of exactly 1 is not multiplied, a coefficient of exactly 0 is not added, and exact
zero leading coefficients are dropped).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_INTERVAL = (-6.0, 6.0)
APPROX_METHODS = ("cryptodl", "least-squares", "chebyshev", "taylor")
APPROX_FNS = ("relu", "sigmoid", "tanh")
_APPROX_RE = re.compile(r"^(%s)-(%s)-(\d+)$" % ("|".join(APPROX_METHODS), "|".join(APPROX_FNS)))

FIXED_POLYS = {
    "x2+2x": [0.0, 2.0, 1.0],
    "square": [0.0, 0.0, 1.0],
}


@dataclass
class ActivationSpec:
    """What an activation name resolved to."""

    name: str                      # as given on the command line
    kind: str                      # "relu" | "identity" | "poly"
    coeffs: Optional[List[float]] = None   # coeffs[i] multiplies x**i (poly only)
    source: str = ""               # where the coefficients came from
    approx: dict = field(default_factory=dict)  # the approx CLI's full answer, if used

    def to_json(self) -> dict:
        out = {"name": self.name, "kind": self.kind}
        if self.coeffs is not None:
            out["coeffs"] = self.coeffs
        if self.source:
            out["source"] = self.source
        if self.approx:
            out["approx"] = self.approx
        return out


def approx_coeffs(method: str, fn: str, degree: int,
                  interval: Tuple[float, float] = DEFAULT_INTERVAL) -> dict:
    """Run the project's approximation CLI and return its JSON answer."""
    lo, hi = interval
    cmd = ["node", os.path.join(REPO_ROOT, "bin", "sealed-edge.mjs"), "approx",
           "--fn", fn, "--method", method, "--degree", str(degree),
           "--interval", f"{lo:g},{hi:g}", "--json"]
    try:
        res = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    except FileNotFoundError as e:
        raise RuntimeError("`node` is not on PATH: cannot run the approx CLI; "
                           "pass the coefficients with --coeffs a0,a1,... instead") from e
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr.strip()}")
    try:
        answer = json.loads(res.stdout)
        coeffs = [float(c) for c in answer["coeffs"]]
    except (ValueError, KeyError, TypeError) as e:
        raise RuntimeError(f"{' '.join(cmd)} printed no coefficients: {res.stdout[:200]!r}") from e
    answer["coeffs"] = coeffs
    answer["command"] = "node bin/sealed-edge.mjs " + " ".join(cmd[2:])
    return answer


def resolve_activation(name: str, coeffs: Optional[Sequence[float]] = None,
                       interval: Tuple[float, float] = DEFAULT_INTERVAL) -> ActivationSpec:
    """Turn an activation name (and optional explicit coefficients) into a spec."""
    if coeffs is not None:
        if name in ("relu", "none"):
            raise ValueError(f"--coeffs makes no sense with --activation {name}")
        return ActivationSpec(name, "poly", [float(c) for c in coeffs], source="--coeffs")
    if name == "relu":
        return ActivationSpec(name, "relu")
    if name in ("none", "identity"):
        return ActivationSpec(name, "identity")
    if name in FIXED_POLYS:
        return ActivationSpec(name, "poly", list(FIXED_POLYS[name]), source="fixed")
    m = _APPROX_RE.match(name)
    if m:
        method, fn, degree = m.group(1), m.group(2), int(m.group(3))
        answer = approx_coeffs(method, fn, degree, interval)
        return ActivationSpec(name, "poly", answer["coeffs"], source=answer["command"],
                              approx=answer)
    if name == "poly":
        raise ValueError("--activation poly needs --coeffs a0,a1,...")
    raise ValueError(f"unknown activation {name!r}: use relu, none, x2+2x, square, poly "
                     f"(with --coeffs), or <method>-<fn>-<degree> with method in "
                     f"{APPROX_METHODS} and fn in {APPROX_FNS}, e.g. cryptodl-relu-2")


def trim_coeffs(coeffs: Sequence[float]) -> List[float]:
    """Drop exact-zero leading (highest-degree) coefficients."""
    c = [float(v) for v in coeffs]
    while len(c) > 1 and c[-1] == 0.0:
        c.pop()
    return c


class Poly(nn.Module):
    """p(x) = sum_i coeffs[i] * x**i, elementwise, in Horner form (Mul/Add only)."""

    def __init__(self, coeffs: Sequence[float]):
        super().__init__()
        self.coeffs = trim_coeffs(coeffs)
        if len(self.coeffs) < 2:
            raise ValueError(f"polynomial activation {list(coeffs)} is constant")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.coeffs
        d = len(c) - 1
        y = x if c[d] == 1.0 else x * c[d]
        for i in range(d - 1, 0, -1):
            if c[i] != 0.0:
                y = y + c[i]
            y = y * x
        if c[0] != 0.0:
            y = y + c[0]
        return y

    def extra_repr(self) -> str:
        return "coeffs=" + ",".join(f"{v:.9g}" for v in self.coeffs)


def make_activation(spec: ActivationSpec) -> nn.Module:
    if spec.kind == "relu":
        return nn.ReLU()
    if spec.kind == "identity":
        return nn.Identity()
    if spec.kind == "poly":
        return Poly(spec.coeffs)
    raise ValueError(spec.kind)


class PaperCNN(nn.Module):
    """The paper's CNN (Keras cifar10_cnn on 28x28x1); see the module docstring."""

    FEATURES = 64 * 5 * 5

    def __init__(self, activation: nn.Module, batch_norm: bool = False):
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(1, 32, 3, padding=1)),
            ("relu1", nn.ReLU()),
            ("conv2", nn.Conv2d(32, 32, 3)),
            ("relu2", nn.ReLU()),
            ("pool1", nn.MaxPool2d(2)),
            ("drop1", nn.Dropout(0.25)),
            ("conv3", nn.Conv2d(32, 64, 3, padding=1)),
            ("relu3", nn.ReLU()),
            ("conv4", nn.Conv2d(64, 64, 3)),
            ("relu4", nn.ReLU()),
            ("pool2", nn.MaxPool2d(2)),
            ("drop2", nn.Dropout(0.25)),
            ("flatten", nn.Flatten()),
        ]))
        self.classifier = paper_head(activation, batch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def paper_head(activation: nn.Module, batch_norm: bool) -> nn.Sequential:
    """The paper CNN's classifier: FC 1600->512, [BN,] activation, Dropout, FC 512->10."""
    head = [("fc1", nn.Linear(PaperCNN.FEATURES, 512))]
    if batch_norm:  # foldable into fc1
        head.append(("bn1", nn.BatchNorm1d(512)))
    head += [("act", activation), ("drop3", nn.Dropout(0.5)), ("fc2", nn.Linear(512, 10))]
    return nn.Sequential(OrderedDict(head))


class PaperCNNHE(nn.Module):
    """paper-cnn with a polynomial activation everywhere and average pooling; see the
    module docstring. Without ``batch_norm`` it is the folded, exported form."""

    def __init__(self, activation_factory, batch_norm: bool = True):
        super().__init__()
        layers = []
        convs = [(1, 32, 1), (32, 32, 0), (32, 64, 1), (64, 64, 0)]
        for i, (cin, cout, pad) in enumerate(convs, start=1):
            layers.append((f"conv{i}", nn.Conv2d(cin, cout, 3, padding=pad)))
            if batch_norm:
                layers.append((f"bn{i}", nn.BatchNorm2d(cout)))
            layers.append((f"act{i}", activation_factory()))
            if i % 2 == 0:
                # unpadded either way; count_include_pad=True would export a no-op Pad
                layers.append((f"pool{i // 2}", nn.AvgPool2d(2, count_include_pad=False)))
                layers.append((f"drop{i // 2}", nn.Dropout(0.25)))
        layers.append(("flatten", nn.Flatten()))
        self.features = nn.Sequential(OrderedDict(layers))
        self.classifier = paper_head(activation_factory(), batch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@torch.no_grad()
def fold_batch_norm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm that follows a Conv2d/Linear (with a bias) in an nn.Sequential
    into that layer's weight and bias (eval-mode statistics) and remove it, in place."""
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for prev, name in zip(names, names[1:]):
            bn = seq._modules[name]
            if not isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)):
                continue
            layer = seq._modules[prev]
            if not isinstance(layer, (nn.Conv2d, nn.Linear)):
                raise ValueError(f"{name} follows {prev} ({type(layer).__name__}), not a "
                                 f"Conv2d or Linear: cannot fold it")
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            shape = (-1,) + (1,) * (layer.weight.dim() - 1)
            layer.weight.mul_(scale.reshape(shape))
            layer.bias.copy_((layer.bias - bn.running_mean) * scale + bn.bias)
            delattr(seq, name)
    return model


class SmallPoly(nn.Module):
    """CryptoNets/LoLa-sized all-polynomial network; see the module docstring."""

    def __init__(self, activation_factory, channels: int = 5, hidden: int = 100):
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(1, channels, 5, stride=2, padding=1)),
            ("act1", activation_factory()),
            ("flatten", nn.Flatten()),
        ]))
        self.classifier = nn.Sequential(OrderedDict([
            ("fc1", nn.Linear(channels * 13 * 13, hidden)),
            ("act2", activation_factory()),
            ("fc2", nn.Linear(hidden, 10)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class DeepPoly(nn.Module):
    """Two Convs, average pooling, polynomial activations only; see the module docstring.
    Without ``batch_norm`` it is the folded, exported form."""

    def __init__(self, activation_factory, batch_norm: bool = True):
        super().__init__()
        layers = [("conv1", nn.Conv2d(1, 8, 5, stride=2, padding=1))]    # -> 8x13x13
        if batch_norm:
            layers.append(("bn1", nn.BatchNorm2d(8)))
        layers += [("act1", activation_factory()),
                   ("conv2", nn.Conv2d(8, 16, 3))]                         # -> 16x11x11
        if batch_norm:
            layers.append(("bn2", nn.BatchNorm2d(16)))
        layers += [("act2", activation_factory()),
                   # unpadded; count_include_pad=True would export a no-op Pad
                   ("pool", nn.AvgPool2d(2, count_include_pad=False)),    # -> 16x5x5
                   ("flatten", nn.Flatten())]
        self.features = nn.Sequential(OrderedDict(layers))
        self.classifier = nn.Sequential(OrderedDict([("fc", nn.Linear(16 * 5 * 5, 10))]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class ColourPoly(nn.Module):
    """The small all-polynomial colour CNN (3x32x32); see the module docstring.
    Without ``batch_norm`` it is the folded, exported form."""

    CHANNELS, SIZE, MAPS, HIDDEN = 3, 32, 8, 64

    def __init__(self, activation_factory, batch_norm: bool = True):
        super().__init__()
        layers = [("conv1", nn.Conv2d(self.CHANNELS, self.MAPS, 5, stride=2, padding=2))]  # -> 8x16x16
        if batch_norm:
            layers.append(("bn1", nn.BatchNorm2d(self.MAPS)))
        layers += [("act1", activation_factory()),
                   ("pool", nn.AvgPool2d(2, count_include_pad=False)),            # -> 8x8x8
                   ("flatten", nn.Flatten())]
        self.features = nn.Sequential(OrderedDict(layers))
        head = [("fc1", nn.Linear(self.MAPS * 8 * 8, self.HIDDEN))]
        if batch_norm:
            head.append(("bn2", nn.BatchNorm1d(self.HIDDEN)))
        head += [("act2", activation_factory()), ("fc2", nn.Linear(self.HIDDEN, 10))]
        self.classifier = nn.Sequential(OrderedDict(head))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


MODELS = ("paper-cnn", "paper-cnn-he", "small-poly", "deep-poly", "colour-poly")
# the models trained with batch norms that fold_batch_norm folds before the export
FOLDED_BATCH_NORM = ("paper-cnn-he", "deep-poly", "colour-poly")
# the models of the synthetic colour set (training/colour_data.py); the others are MNIST's
COLOUR_MODELS = ("colour-poly",)


def input_shape(name: str) -> Tuple[int, int, int]:
    """(channels, height, width) of a model's input."""
    if name in COLOUR_MODELS:
        return (ColourPoly.CHANNELS, ColourPoly.SIZE, ColourPoly.SIZE)
    return (1, 28, 28)


def build_model(name: str, spec: ActivationSpec, batch_norm: bool = False) -> nn.Module:
    if name == "paper-cnn":
        return PaperCNN(make_activation(spec), batch_norm=batch_norm)
    if name == "paper-cnn-he":
        if spec.kind != "poly":
            raise ValueError(f"paper-cnn-he needs a polynomial activation, not {spec.name}")
        return PaperCNNHE(lambda: make_activation(spec), batch_norm=batch_norm)
    if name == "small-poly":
        if batch_norm:
            raise ValueError("--batch-norm is only for paper-cnn, paper-cnn-he and deep-poly")
        return SmallPoly(lambda: make_activation(spec))
    if name == "deep-poly":
        if spec.kind != "poly":
            raise ValueError(f"deep-poly needs a polynomial activation, not {spec.name}")
        return DeepPoly(lambda: make_activation(spec), batch_norm=batch_norm)
    if name == "colour-poly":
        if spec.kind != "poly":
            raise ValueError(f"colour-poly needs a polynomial activation, not {spec.name}")
        return ColourPoly(lambda: make_activation(spec), batch_norm=batch_norm)
    raise ValueError(f"unknown model {name!r}: use one of {MODELS}")


def replace_activation(model: nn.Module, spec: ActivationSpec) -> nn.Module:
    """Swap paper-cnn's classifier activation in place (no retraining)."""
    if not isinstance(model, PaperCNN):
        raise TypeError("replace_activation expects a PaperCNN")
    model.classifier.act = make_activation(spec)
    return model
