#!/usr/bin/env bash
# CI smoke test of the training agent (well under 2 minutes on 2 cores):
#   1. the unit tests (IDX reader, polynomials, paper-cnn-he's and deep-poly's build,
#      batch-norm folding and export on a fake MNIST, --shift, the cosine schedule);
#   2. paper-cnn with x^2+2x, 1 epoch on the first 3,000 training images, exported to
#      ONNX and checked (onnx.checker, the input/output contract, and the numpy
#      interpreter's output against PyTorch's; train.py fails if any check fails);
#   3. the exported file loads again and the accuracy is sane;
#   4. colour-poly, 1 epoch on 3,000 generated colour images (training/colour_data.py),
#      exported and checked the same way, with its input spec file.
# Extra arguments go to train.py (e.g. --data DIR). Needs Debian's python3-torch and
# python3-onnx under /usr/bin/python3 (override with SEALED_EDGE_PYTHON).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${SEALED_EDGE_PYTHON:-/usr/bin/python3}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

"$PY" -m unittest discover -s training/tests -q

"$PY" training/train.py --model paper-cnn --activation x2+2x --epochs 1 --limit 3000 \
  --seed 1 --threads 2 --out "$out/smoke.onnx" "$@"

"$PY" - "$out/smoke.onnx" "$out/smoke.json" <<'PYEOF'
import json, sys
import onnx
model = onnx.load(sys.argv[1])
onnx.checker.check_model(model)
ops = {n.op_type for n in model.graph.node}
assert not ops & {"Dropout", "Softmax"}, ops
metrics = json.load(open(sys.argv[2]))
acc = metrics["testAccuracy"]
assert acc > 0.80, f"smoke accuracy {acc} is implausibly low"
print(f"smoke ok: test accuracy {acc:.4f} after 1 epoch on {metrics['trainImages']} images, "
      f"{metrics['trainSeconds']} s; ONNX {metrics['onnx']['bytes']} bytes, ops {sorted(ops)}")
PYEOF

"$PY" training/train.py --model colour-poly --epochs 1 --limit 3000 --batch-size 32 --seed 1 --threads 2 \
  --out "$out/colour.onnx"

"$PY" - "$out/colour.onnx" "$out/colour.json" "$out/colour.input.json" <<'PYEOF'
import json, sys
import onnx
model = onnx.load(sys.argv[1])
onnx.checker.check_model(model)
ops = {n.op_type for n in model.graph.node}
assert ops == {"Conv", "Mul", "AveragePool", "Flatten", "Gemm"}, ops
metrics = json.load(open(sys.argv[2]))
spec = json.load(open(sys.argv[3]))
assert spec["inputSpec"] == metrics["inputSpec"] and spec["inputSpec"]["channels"] == 3, spec
acc = metrics["testAccuracy"]
assert acc > 0.30, f"colour smoke accuracy {acc} is implausibly low"
print(f"colour smoke ok: test accuracy {acc:.4f} after 1 epoch on {metrics['trainImages']} "
      f"images, {metrics['trainSeconds']} s; protect flags: {spec['protectFlags']}")
PYEOF
