"""Export: a checkpoint -> a verified ONNX model (native GridSample) in a Triton-layout model repository.

``export_checkpoint`` (in ``export.onnx_export``) is the library entry point; ``stn-export`` (``export.cli``)
is a thin command line over it. See docs/export.md.
"""

from export.onnx_export import OPSET, ExportError, ExportResult, export_checkpoint

__all__ = ["OPSET", "ExportError", "ExportResult", "export_checkpoint"]
