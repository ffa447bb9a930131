"""Export of knet_d2 models to ONNX / TorchScript and D2-format inference on the exported
graphs (docs/EXPORT.md). ``onnx`` / ``onnxruntime`` are imported only when used."""
from .deploy_info import class_table, deployment_info
from .knet_export import (
    MAX_OPSET,
    MIN_OPSET,
    export_metadata,
    export_onnx,
    export_torchscript,
    preprocess_batch,
    preprocess_params,
)
from .predictor import ExportedKNetPredictor, read_onnx_metadata, read_torchscript_metadata
from .traceable import (
    SUPPORTED_META_ARCHITECTURES,
    ExportableAdaptiveAvgPool2d,
    KNetExportWrapper,
    SemSegExportWrapper,
    UnsupportedModelError,
    build_export_wrapper,
    make_onnx_exportable,
    reference_outputs,
)

__all__ = [
    "MAX_OPSET",
    "MIN_OPSET",
    "SUPPORTED_META_ARCHITECTURES",
    "ExportableAdaptiveAvgPool2d",
    "KNetExportWrapper",
    "SemSegExportWrapper",
    "UnsupportedModelError",
    "build_export_wrapper",
    "class_table",
    "deployment_info",
    "export_metadata",
    "export_onnx",
    "export_torchscript",
    "make_onnx_exportable",
    "preprocess_batch",
    "preprocess_params",
    "reference_outputs",
    "ExportedKNetPredictor",
    "read_onnx_metadata",
    "read_torchscript_metadata",
]
