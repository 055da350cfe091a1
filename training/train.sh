#!/bin/sh
# `npm run train -- ARGS` lands here: run training/train.py with the Python that has
# Debian's PyTorch (python3-torch) and ONNX (python3-onnx). That is /usr/bin/python3,
# not necessarily the first python3 on PATH; override with SEALED_EDGE_PYTHON.
exec "${SEALED_EDGE_PYTHON:-/usr/bin/python3}" "$(dirname "$0")/train.py" "$@"
