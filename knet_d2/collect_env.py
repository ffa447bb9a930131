"""Print what an install of knet_d2 is made of: ``python -m knet_d2.collect_env``.

Shows detectron2's own environment table (torch, CUDA, compiled ops) followed by the
versions of the packages knet_d2 relies on and whether its registries are populated.
"""
import importlib
import sys


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
    return "\n".join(lines)


if __name__ == "__main__":
    print(collect_env_info())
    sys.exit(0)
