#!/usr/bin/env bash
# Download (and for pure-Python sdists, build) the wheels that the benchmarks need on the GPU
# machine, which has Python 3.12 + torch 2.11 + torchvision 0.26 (+ numpy, scipy, Pillow,
# matplotlib, opencv, tabulate, tqdm, pyyaml, portalocker, cloudpickle) but no package registry.
# See benchmarks/gpu_run.md for how the folder is carried and installed there.
#
# Usage: benchmarks/build_gpu_wheelhouse.sh [DEST] [SPEC ...]
#   DEST   output folder (default: .whl in the repository root; ignored by git). Existing
#          wheels are kept (pip skips files already there).
#   SPEC   only these requirement specs (e.g. "termcolor==3.3.0"), for a quick check; without
#          SPECs every package below is fetched (the detectron2 wheel is the largest part).
#   PYTHON interpreter that runs pip (default: .venv/bin/python, else python3).
#
# Layout of DEST: cp312 / py3 wheels at the top (pip-installable there with --target);
# d2/ holds sal-detectron2's cp310 wheel, which pip refuses on 3.12 and which is unzipped
# instead (its pure-Python code runs on 3.12, its compiled _C is not needed).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$here/.whl}"
shift || true
py="${PYTHON:-}"
if [ -z "$py" ]; then
  if [ -x "$here/.venv/bin/python" ]; then py="$here/.venv/bin/python"; else py=python3; fi
fi
mkdir -p "$dest" "$dest/d2"

platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform manylinux1_x86_64)
pip=("$py" -m pip --disable-pip-version-check)
download_312() {  # binary or universal wheels for CPython 3.12 on x86_64 Linux
  "${pip[@]}" download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$dest" "$@"
}

if [ "$#" -gt 0 ]; then
  download_312 "$@"
  ls -l "$dest"
  exit 0
fi

# Same versions as the development environment (tools/install_deps.sh resolved them).
download_312 pycocotools==2.0.11 yacs==0.1.8 termcolor==3.3.0 omegaconf==2.3.1 \
  hydra-core==1.3.8 panopticapi-lite==0.2.0
# Pure-Python packages published as sdists only: build py3-none-any wheels here.
"${pip[@]}" wheel --no-deps --no-build-isolation -w "$dest" \
  fvcore==0.1.5.post20221221 iopath==0.1.10 antlr4-python3-runtime==4.9.3 \
  || "${pip[@]}" wheel --no-deps -w "$dest" \
    fvcore==0.1.5.post20221221 iopath==0.1.10 antlr4-python3-runtime==4.9.3
# detectron2: the sal-detectron2 build is published for CPython 3.10 only, tagged
# cp310-cp310-linux_x86_64 (not manylinux), so no --platform: this x86_64 Linux host matches.
"${pip[@]}" download --no-deps --only-binary=:all: --python-version 3.10 --implementation cp \
  -d "$dest/d2" sal-detectron2==0.7.2
ls -l "$dest" "$dest/d2"
du -sh "$dest"
