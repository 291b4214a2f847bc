#!/usr/bin/env bash
# Create the virtual environment and install the project with everything it needs,
# on a fresh machine: Debian's Fashion-MNIST, torch/torchvision, Flower with Ray.
set -euo pipefail
PY=${1:-python3}
VENV=${2:-.venv}
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  ($SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist) \
    || echo "warning: could not install dataset-fashion-mnist; fashion-mnist needs data-root" >&2
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch and torchvision first, as a matching pair (a mismatched pair fails to import).
"$VENV/bin/python" -m pip install -q "torch>=2.9" "torchvision>=0.24"
"$VENV/bin/python" -m pip install -q -e ".[dev,tracking]"
