#!/usr/bin/env bash
# Our dlg/ig against breaching's on the same gradients (see studies/compare_breaching.py).
# breaching 0.1.2 and its config libraries go into a throwaway folder (pip --target, no
# dependency resolution: torch, scipy and the rest come from this project's environment);
# breaching is never a dependency of the project. BREACHING_DIR=<folder> reuses such a
# folder from an earlier run instead (it is then left in place). Arguments are passed on.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python}"
tmp="${BREACHING_DIR:-}"
if [ -z "$tmp" ]; then
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    "$python" -m pip install -q --no-deps --target "$tmp" "breaching==0.1.2" "hydra-core==1.3.2" "omegaconf==2.3.0" \
        "antlr4-python3-runtime==4.9.3" "lpips==0.1.4"
fi
cd "$repo"
PYTHONPATH="$repo:$tmp" "$python" -m studies.compare_breaching "$@"
