"""Run knet_d2 models exported to ONNX with only onnxruntime, numpy and OpenCV.

No PyTorch and no detectron2: this package does not import ``knet_d2``. The export
(``tools/export_model.py``) stores in the ``.onnx`` file everything the runtime needs besides
the graph (channel order, test resize, normalisation, padding, post-processing thresholds,
class names and colours); :class:`KNetOnnxModel` reproduces the model's pre- and
post-processing in numpy. Command line::

    python -m knet_onnx IMAGE_OR_DIR --model export/panoptic --output out/

See docs/EXPORT.md.
"""
from .model import MODEL_FILE_NAME, KNetOnnxModel
from .spec import ExportSpec, SpecError

__all__ = ["ExportSpec", "KNetOnnxModel", "MODEL_FILE_NAME", "SpecError"]
