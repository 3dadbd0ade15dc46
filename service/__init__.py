"""stn-serve: the HTTP inference service (FastAPI on onnxruntime) of the spatial transformer models."""

__version__ = "0.1.0"
