#!/usr/bin/env bash
# Install knet_d2 and its dependencies into a virtual environment (default: .venv).
#
# Every pip call runs with `-c` on the lock (requirements/lock.txt): a fresh environment gets
# exactly the versions the test suite passed with, and a changed lock reinstalls (`make lock`
# updates it on purpose). Idempotent: re-running it when everything is present installs
# nothing. The facts it relies on (no official detectron2 on PyPI, numpy<2, setuptools<81,
# panopticapi-lite) are written up in the README's "Install" section.
#
# Usage: tools/install_deps.sh [VENV_DIR]
#   KNET_PYTHON   interpreter used to create the venv (default: python3)
#   KNET_NO_VENV=1  install into the current interpreter instead of a venv
#   KNET_SYSTEM_SITE_PACKAGES=1  create the venv with --system-site-packages, so a detectron2
#                   (and torch) already installed for KNET_PYTHON is used by `make` targets
#   In those two user-environment modes the lock pins only what is missing: packages already
#   installed are kept, and an installed torch / torchvision / detectron2 is never replaced.
#   KNET_LOCK     the lock file (default: requirements/lock.txt); `none`: version ranges only
#   KNET_TORCH_INDEX  extra package index for the CPU torch wheel (default: tried only when pip
#                   does not find the locked torch otherwise: https://download.pytorch.org/whl/cpu)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$here/.venv}"
lock="${KNET_LOCK:-$here/requirements/lock.txt}"
locker="$here/knet_d2/install_lock.py"  # standard library only: runs before anything is installed
stamp_inputs=("$here/setup.py" "$here/tools/install_deps.sh" "$locker")
lock_args=()
if [ "$lock" != "none" ]; then
  [ -f "$lock" ] || { echo "[install] lock file not found: $lock (KNET_LOCK=none: ranges only)" >&2; exit 2; }
  stamp_inputs+=("$lock")
  lock_args=(--lock "$lock")
fi

user_env=()
if [ "${KNET_NO_VENV:-0}" = "1" ]; then
  py="${KNET_PYTHON:-python3}"
  stamp="$here/.knet_install_stamp"
  user_env=(--user-env)
else
  if [ ! -x "$venv/bin/python" ]; then
    echo "[install] creating virtual environment $venv"
    opts=()
    [ "${KNET_SYSTEM_SITE_PACKAGES:-0}" = "1" ] && opts+=(--system-site-packages)
    "${KNET_PYTHON:-python3}" -m venv "${opts[@]}" "$venv"
  fi
  py="$venv/bin/python"
  stamp="$venv/.knet_installed"
  if grep -qiE '^include-system-site-packages *= *true' "$venv/pyvenv.cfg"; then
    user_env=(--user-env)  # a --system-site-packages venv: the user's packages are visible
  fi
fi

# Fast path: nothing changed since the last complete install from this lock.
if [ -f "$stamp" ]; then
  newer=0
  for f in "${stamp_inputs[@]}"; do [ "$f" -nt "$stamp" ] && newer=1; done
  if [ "$newer" = 0 ] && "$py" "$locker" check-stamp --stamp "$stamp" "${lock_args[@]}" \
      && "$py" -c "import knet_d2, detectron2" 2>/dev/null; then
    exit 0
  fi
fi

pip=("$py" -m pip --disable-pip-version-check -q)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
constraints="$work/constraints.txt"
if [ "$lock" = "none" ]; then
  echo "[install] KNET_LOCK=none: newest versions within the ranges, nothing locked"
  : > "$constraints"
else
  d2_flag=()
  if "$py" -c "import importlib.util as u, sys; sys.exit(u.find_spec('detectron2') is None)" \
      && ! "$py" -m pip show -q sal-detectron2 >/dev/null 2>&1; then
    d2_flag=(--detectron2-elsewhere)
  fi
  "$py" "$locker" plan --lock "$lock" --out "$constraints" --stamp "$stamp" \
    "${user_env[@]}" "${d2_flag[@]}"
fi
pipc=("${pip[@]}" install -c "$constraints")

echo "[install] torch / torchvision"
if [ -n "${KNET_TORCH_INDEX:-}" ]; then
  "${pipc[@]}" --extra-index-url "$KNET_TORCH_INDEX" "torch>=2.1" "torchvision>=0.16"
elif ! "${pipc[@]}" "torch>=2.1" "torchvision>=0.16"; then
  # PyPI's Linux torch wheels are CUDA builds; the locked CPU build lives on PyTorch's index.
  echo "[install] retrying with the PyTorch CPU index (set KNET_TORCH_INDEX to use another)"
  "${pipc[@]}" --extra-index-url https://download.pytorch.org/whl/cpu \
    "torch>=2.1" "torchvision>=0.16"
fi

echo "[install] detectron2 runtime dependencies"
"${pipc[@]}" "numpy<2" "opencv-python-headless<5" "setuptools<81" \
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
  "${pipc[@]}" --no-deps --only-binary=:all: --python-version 3.10 \
    --target "$purelib" --upgrade sal-detectron2==0.7.2
fi

echo "[install] panopticapi (panopticapi-lite, without its over-strict dependency pins)"
"${pipc[@]}" --no-deps "panopticapi-lite==0.2.0" platformdirs

echo "[install] cityscapesscripts + shapely (D2's Cityscapes loaders and AP / mIoU evaluators)"
# --no-deps: its metadata requires the obsolete 'typing' backport; the rest it needs is listed.
"${pipc[@]}" --no-deps cityscapesscripts appdirs pyquaternion coloredlogs humanfriendly
# D2's cityscapes_fine_instance_seg_* loader rasterises the gtFine polygons with shapely.
"${pipc[@]}" "numpy<2" shapely

echo "[install] ONNX export (tools/export_model.py) and ONNX Runtime (its --check and tests)"
# numpy<2 in the same command: newer ml_dtypes (an onnx dependency) would pull numpy 2.
"${pipc[@]}" "numpy<2" "onnx>=1.16,<2" "onnxruntime>=1.18,<2"

echo "[install] test and lint tools"
"${pipc[@]}" pytest pytest-timeout pytest-xdist ruff hypothesis scikit-image

plan_args=()
if [ "$lock" != "none" ]; then
  # Packages already present (an earlier install, another lock) keep their version above when
  # they satisfy the ranges; move every one that differs from the lock.
  mapfile -t drift < <("$py" "$locker" drift --plan "$constraints" "${user_env[@]}")
  if [ "${#drift[@]}" -gt 0 ]; then
    echo "[install] to the locked versions: ${drift[*]}"
    "${pip[@]}" install --no-deps "${drift[@]}"
  fi
  plan_args=(--lock "$lock" --plan "$constraints")
fi

echo "[install] knet_d2 (editable)"
"${pip[@]}" install --no-deps --no-build-isolation -e "$here"

"$py" -c "import detectron2, knet_d2, panopticapi.evaluation, torch; print('[install] ok: torch', torch.__version__, '| detectron2', detectron2.__version__)"
"$py" "$locker" finish --stamp "$stamp" "${plan_args[@]}" "${user_env[@]}"
