#!/usr/bin/env bash
# Install knet_d2 and its dependencies into a virtual environment (default: .venv).
#
# Idempotent: re-running it when everything is present installs nothing. The facts it relies
# on (no official detectron2 on PyPI, numpy<2, setuptools<81, panopticapi-lite) are written up
# in the README's "Install" section.
#
# Usage: tools/install_deps.sh [VENV_DIR]
#   KNET_PYTHON   interpreter used to create the venv (default: python3)
#   KNET_NO_VENV=1  install into the current interpreter instead of a venv
#   KNET_SYSTEM_SITE_PACKAGES=1  create the venv with --system-site-packages, so a detectron2
#                   (and torch) already installed for KNET_PYTHON is used by `make` targets
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$here/.venv}"
stamp_inputs=("$here/setup.py" "$here/tools/install_deps.sh")

if [ "${KNET_NO_VENV:-0}" = "1" ]; then
  py="${KNET_PYTHON:-python3}"
  stamp="$here/.knet_install_stamp"
else
  if [ ! -x "$venv/bin/python" ]; then
    echo "[install] creating virtual environment $venv"
    opts=()
    [ "${KNET_SYSTEM_SITE_PACKAGES:-0}" = "1" ] && opts+=(--system-site-packages)
    "${KNET_PYTHON:-python3}" -m venv "${opts[@]}" "$venv"
  fi
  py="$venv/bin/python"
  stamp="$venv/.knet_installed"
fi

# Fast path: nothing changed since the last complete install.
if [ -f "$stamp" ]; then
  newer=0
  for f in "${stamp_inputs[@]}"; do [ "$f" -nt "$stamp" ] && newer=1; done
  if [ "$newer" = 0 ] && "$py" -c "import knet_d2, detectron2" 2>/dev/null; then
    exit 0
  fi
fi

pip=("$py" -m pip --disable-pip-version-check -q)

echo "[install] torch / torchvision"
"${pip[@]}" install "torch>=2.1" "torchvision>=0.16"

echo "[install] detectron2 runtime dependencies"
"${pip[@]}" install "numpy<2" "opencv-python-headless<5" "setuptools<81" \
  Pillow matplotlib pycocotools termcolor yacs tabulate cloudpickle tqdm tensorboard \
  fvcore iopath "omegaconf>=2.1,<2.4" hydra-core packaging scipy

if "$py" -c "import detectron2" 2>/dev/null; then
  echo "[install] using the installed detectron2: $("$py" -c 'import detectron2, os; print(os.path.dirname(detectron2.__file__))')"
else
  # No official detectron2 wheel exists on PyPI. sal-detectron2 ships upstream detectron2's
  # pure-Python code as a cp310 wheel; its compiled _C does not load on other Pythons and
  # detectron2 falls back gracefully (K-Net needs none of the compiled ops).
  echo "[install] detectron2 not importable: installing the sal-detectron2==0.7.2 wheel"
  purelib="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  "${pip[@]}" install --no-deps --only-binary=:all: --python-version 3.10 \
    --target "$purelib" --upgrade sal-detectron2==0.7.2
fi

echo "[install] panopticapi (panopticapi-lite, without its over-strict dependency pins)"
"${pip[@]}" install --no-deps "panopticapi-lite==0.2.0" platformdirs

echo "[install] cityscapesscripts + shapely (D2's Cityscapes loaders and AP / mIoU evaluators)"
# --no-deps: its metadata requires the obsolete 'typing' backport; the rest it needs is listed.
"${pip[@]}" install --no-deps cityscapesscripts==2.3.0 appdirs pyquaternion coloredlogs humanfriendly
# D2's cityscapes_fine_instance_seg_* loader rasterises the gtFine polygons with shapely.
"${pip[@]}" install "numpy<2" shapely

echo "[install] ONNX export (tools/export_model.py) and ONNX Runtime (its --check and tests)"
# numpy<2 in the same command: newer ml_dtypes (an onnx dependency) would pull numpy 2.
"${pip[@]}" install "numpy<2" "onnx>=1.16,<2" "onnxruntime>=1.18,<2"

echo "[install] test and lint tools"
"${pip[@]}" install pytest pytest-timeout pytest-xdist ruff hypothesis scikit-image

echo "[install] knet_d2 (editable)"
"${pip[@]}" install --no-deps --no-build-isolation -e "$here"

"$py" -c "import detectron2, knet_d2, panopticapi.evaluation, torch; print('[install] ok: torch', torch.__version__, '| detectron2', detectron2.__version__)"
touch "$stamp"
