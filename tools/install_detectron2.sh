#!/usr/bin/env bash
# Install detectron2 into the active Python without building it.
# detectron2's authors publish no wheel on PyPI; `sal-detectron2` repackages detectron2 main.
# Its wheel is tagged cp310, but the Python code is version independent (the compiled _C,
# which only deformable conv / rotated boxes need, is skipped by detectron2 on other Pythons).
# An importable detectron2 (for example a user's own CUDA build) is kept as it is.
set -euo pipefail
PY=${PYTHON:-python}
if "$PY" -c "import detectron2" 2>/dev/null; then
  echo "detectron2 already importable: $("$PY" -c 'import detectron2,os;print(os.path.dirname(detectron2.__file__))')"
  exit 0
fi
VERSION=${SAL_DETECTRON2_VERSION:-0.7.2}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.10 \
  -d "$tmp" "sal-detectron2==${VERSION}"
whl=$(ls "$tmp"/*.whl | head -n1)
# pip only checks the file name's tags: rename to a universal tag for this interpreter.
name=$(basename "$whl" | cut -d- -f1-2)
cp "$whl" "$tmp/${name}-py3-none-any.whl"
"$PY" -m pip install --no-deps "$tmp/${name}-py3-none-any.whl"
# detectron2's own runtime dependencies (as in its setup.py); make setup pins their versions.
"$PY" -m pip install "numpy" "Pillow>=7.1" "matplotlib" "pycocotools>=2.0.2" "termcolor>=1.1" \
  "yacs>=0.1.8" "tabulate" "cloudpickle" "tqdm>4.29.0" "tensorboard" "fvcore>=0.1.5,<0.1.6" \
  "iopath>=0.1.7,<0.1.10" "omegaconf>=2.1,<2.4" "hydra-core>=1.1" "black" "packaging"
"$PY" -c "import detectron2; print('detectron2', detectron2.__version__)"
