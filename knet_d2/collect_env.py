"""Print what an install of knet_d2 is made of: ``python -m knet_d2.collect_env``.

Shows detectron2's own environment table (torch, CUDA, compiled ops) followed by the
versions of the packages knet_d2 relies on, whether its registries are populated, and a
warning for each package whose version lies outside the tested matrix (:data:`TESTED_MATRIX`).

``python -m knet_d2.collect_env --short`` prints one line instead (:func:`machine_line`: CPU,
cores, memory, GPUs, python / torch / detectron2 / numpy versions), the machine description
that every benchmark result records.
"""
import argparse
import importlib
import os
import platform
import re
import sys
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

# What the test suite has passed with: the lock (requirements/lock.txt) and the
# development environment. {package: (lowest tested, first untested)} on release numbers; local
# build labels (+cpu, +cu121) are ignored. Keep in step with the lock and the README's matrix.
TESTED_MATRIX: Dict[str, Tuple[str, str]] = {
    "python": ("3.11", "3.12"),
    "torch": ("2.14", "2.15"),
    "torchvision": ("0.29", "0.30"),
    "detectron2": ("0.7.2", "0.7.3"),
    "numpy": ("1.26", "2"),
}


def _release(version: str) -> Tuple[int, ...]:
    match = re.match(r"\d+(?:\.\d+)*", version)
    if match is None:
        return ()
    parts = [int(part) for part in match.group(0).split(".")]
    while len(parts) > 1 and parts[-1] == 0:  # 2.13.0 == 2.13
        parts.pop()
    return tuple(parts)


def tested_range(name: str) -> str:
    low, high = TESTED_MATRIX[name]
    return f">={low},<{high}"


def matrix_warnings(versions: Mapping[str, Optional[str]]) -> List[str]:
    """One warning per package of :data:`TESTED_MATRIX` installed at an untested version.

    Args:
        versions: ``{package: version}`` (None or absent: not installed, no warning).
    """
    warnings = []
    for name, (low, high) in TESTED_MATRIX.items():
        version = versions.get(name)
        if not version:
            continue
        release = _release(version)
        if not release or not (_release(low) <= release < _release(high)):
            warnings.append(
                f"WARNING: {name} {version} is outside the tested range {name}"
                f"{tested_range(name)}; knet_d2 may work, but this combination is untested "
                "(the tested versions are in requirements/lock.txt)"
            )
    return warnings


def installed_matrix_versions() -> Dict[str, Optional[str]]:
    """Versions of the :data:`TESTED_MATRIX` packages in this environment (None: missing)."""
    versions: Dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in TESTED_MATRIX:
        if name == "python":
            continue
        try:
            versions[name] = str(importlib.import_module(name).__version__)
        except Exception:  # not installed / broken: reported by the table above
            versions[name] = None
    return versions


def _version(name: str) -> str:
    try:
        mod = importlib.import_module(name)
    except Exception as e:  # report, never crash: this is a diagnostic tool
        return f"not importable ({type(e).__name__}: {e})"
    return str(getattr(mod, "__version__", "installed")) + f" @ {getattr(mod, '__file__', '?')}"


def collect_env_info() -> str:
    """Return a multi-line report of the environment."""
    lines = []
    try:
        from detectron2.utils.collect_env import collect_env_info as d2_info

        lines.append(d2_info())
    except Exception as e:
        lines.append(f"detectron2 environment table unavailable: {type(e).__name__}: {e}")
    lines.append("knet_d2 dependencies:")
    for name in ["knet_d2", "detectron2", "torch", "torchvision", "numpy", "fvcore", "pycocotools",
                 "panopticapi", "scipy", "cv2"]:
        lines.append(f"  {name:<12} {_version(name)}")
    try:
        from detectron2.modeling import META_ARCH_REGISTRY

        import knet_d2  # noqa: F401  (registers everything)

        lines.append(f"  KNet meta-architecture registered: {'KNet' in META_ARCH_REGISTRY}")
    except Exception as e:
        lines.append(f"  knet_d2 import failed: {type(e).__name__}: {e}")
    try:
        import detectron2._C  # noqa: F401

        lines.append("  detectron2._C: loaded (compiled ops available)")
    except Exception:
        lines.append("  detectron2._C: not loaded (pure-Python build; K-Net needs no compiled op)")
    warnings = matrix_warnings(installed_matrix_versions())
    lines.extend(warnings or ["  all versions within the tested matrix"])
    return "\n".join(lines)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    try:
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        if m:
            return m.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def memory_gib() -> Optional[float]:
    """Physical memory of the machine in GiB (None where ``os.sysconf`` cannot tell)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def machine_line() -> str:
    """One line describing this machine and install, e.g. ``CPU Intel Xeon ... (2 cores), 24 GiB
    RAM, no GPU; python 3.11.7, torch 2.14.1, detectron2 0.7.2, numpy 1.26.4``."""
    import torch

    ram = memory_gib()
    parts = [f"CPU {cpu_model()} ({os.cpu_count()} cores)",
             f"{ram:.0f} GiB RAM" if ram is not None else "RAM unknown"]
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        gpus = ", ".join(f"{n} x{names.count(n)}" for n in dict.fromkeys(names))
        parts.append(f"GPU {gpus} (CUDA {torch.version.cuda})")
    else:
        parts.append("no GPU")
    versions = installed_matrix_versions()
    soft = ", ".join(f"{name} {versions.get(name) or 'missing'}"
                     for name in ("python", "torch", "detectron2", "numpy"))
    return ", ".join(parts) + "; " + soft


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true",
                        help="one line: CPU, cores, memory, GPUs and the main versions")
    args = parser.parse_args(argv)
    print(machine_line() if args.short else collect_env_info())
    return 0


if __name__ == "__main__":
    sys.exit(main())
