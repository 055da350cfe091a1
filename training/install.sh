#!/bin/sh
# Installs what the training agent needs, from Debian's packages (the only registry this
# project's machines reach besides npm): PyTorch 1.13 and ONNX 1.12 for /usr/bin/python3.
set -eu
if /usr/bin/python3 -c 'import torch, onnx' >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-torch python3-onnx
