"""``python -m knet_onnx IMAGE_OR_DIR --model EXPORT --output DIR`` (see knet_onnx.cli)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
