"""The model repository (Triton layout) and what each model's ``metadata_props`` say about it.

Layout: ``<repo>/<name>/<version>/model.onnx`` with numeric versions; the highest version is served.
``config.pbtxt`` and the model card beside it are for Triton and people; the service reads only the
``.onnx`` file, whose metadata (``stn.*`` keys, see docs/architecture.md) carry everything preprocessing
and postprocessing need.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from service.errors import ModelNotFound

log = logging.getLogger(__name__)

PARAM_OUTPUT_BY_TRANSFORM = {"projective": "homography", "tps": "control_points"}


@dataclass(frozen=True)
class ModelEntry:
    """One servable model found on disk."""

    name: str
    version: str
    path: Path  # the model.onnx file


@dataclass(frozen=True)
class ModelSpec:
    """What the service needs to know about a model, from its metadata and graph signature."""

    name: str
    version: str
    input_name: str
    input_size: tuple[int, int]  # (H, W) of the model input
    output_size: tuple[int, int]  # (h, w) of the rectified output
    labels: list[str]
    mean: float
    std: float
    polarity: str  # "white_on_black", "black_on_white" or "any" (the model reads both)
    transform: str
    param_output: str | None  # "theta", "homography", "control_points" or None if the graph has none
    output_names: list[str]
    output_shapes: dict[str, list[int]]  # -1 for dynamic dimensions
    metadata: dict[str, str] = field(default_factory=dict)
    resize: str = "stretch"  # "stretch" or "letterbox" (stn.resize)
    padding: str = "zeros"  # what the sampler reads outside the input: "zeros" or "border" (stn.padding)
    # "digit" (one class per image: ``logits``) or "sequence" (stn.kind: up to ``max_len`` digits from
    # ``length_logits`` and ``digit_logits``, digit i read from transformer i's crop)
    kind: str = "digit"
    max_len: int = 1
    transformers: int = 1  # crops in ``rectified`` (a sequence model's: (N, T, C, h, w))
    # A letterboxed sequence model may read its number twice (``service.zoom``): the second time from a square
    # window around the digits the first pass found, the digits' extent ``zoom_fill`` of its side
    # (stn.zoom_fill; None: one pass); where the window is under ``zoom_alone_below`` of the upload's longer
    # side the second pass alone answers, else both passes' log-probabilities add (stn.zoom_alone_below).
    zoom_fill: float | None = None
    zoom_alone_below: float = 0.5

    @property
    def is_sequence(self) -> bool:
        return self.kind == "sequence"

    @property
    def dataset(self) -> str | None:
        return self.metadata.get("stn.dataset")

    @property
    def test_error(self) -> float | None:
        try:
            return float(self.metadata["stn.test_error"])
        except (KeyError, ValueError):
            return None


def scan_repository(root: Path) -> dict[str, ModelEntry]:
    """Every ``<root>/<name>/<version>/model.onnx``, the highest numeric version per name, sorted by name.

    A model folder with version folders but no ``model.onnx`` in any of them (a missing file, a dangling
    link) is listed anyway, at its highest version, so that it fails to load and is reported, rather than
    silently not served. A folder without numeric version folders is not a model and is skipped."""
    if not root.is_dir():
        raise FileNotFoundError(f"model repository {root} does not exist or is not a directory")
    found: dict[str, ModelEntry] = {}
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        versions = [v for v in model_dir.iterdir() if v.is_dir() and v.name.isdigit()]
        if not versions:
            log.debug("skipping %s: no <version>/model.onnx", model_dir)
            continue
        with_file = [v for v in versions if (v / "model.onnx").is_file()]
        if not with_file:
            log.warning("model %s: no model.onnx in %s", model_dir.name, ", ".join(sorted(v.name for v in versions)))
        best = max(with_file or versions, key=lambda v: int(v.name))
        found[model_dir.name] = ModelEntry(model_dir.name, best.name, best / "model.onnx")
    return found


def choose_default(models: dict[str, ModelEntry] | list[str], wanted: str) -> str:
    names = sorted(models)
    if not names:
        raise ModelNotFound("the model repository holds no model")
    if wanted in names:
        return wanted
    log.warning("default model %r not in the repository; using %r", wanted, names[0])
    return names[0]


def _pair(text: str | None, key: str) -> tuple[int, int]:
    if not text:
        raise ValueError(f"metadata {key} is missing")
    parts = [p for p in text.replace("x", ",").split(",") if p.strip()]
    if len(parts) != 2:
        raise ValueError(f"metadata {key} must be 'H,W', got {text!r}")
    return int(parts[0]), int(parts[1])


def _share(text: str, key: str, name: str) -> float:
    """A metadata value in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name}: {key} must be a number in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name}: {key} must be in (0, 1], got {value}")
    return value


def _dims(shape: list[object]) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in shape]


def parse_spec(
    entry: ModelEntry,
    meta: dict[str, str],
    input_name: str,
    input_shape: list[object],
    outputs: dict[str, list[object]],
) -> ModelSpec:
    """Build the spec from ``custom_metadata_map`` and the graph's input/output signature.

    Raises ``ValueError`` naming what is wrong, so a bad model fails at load time.
    """
    in_dims = _dims(input_shape)
    if len(in_dims) != 4 or in_dims[1] != 1:
        raise ValueError(f"{entry.name}: input {input_name!r} must be [N, 1, H, W], got {input_shape}")
    if "stn.input_size" in meta:
        input_size = _pair(meta["stn.input_size"], "stn.input_size")
    elif in_dims[2] > 0 and in_dims[3] > 0:
        input_size = (in_dims[2], in_dims[3])
    else:
        raise ValueError(f"{entry.name}: no stn.input_size and the input shape {input_shape} is not static")
    kind = meta.get("stn.kind", "digit")
    if kind not in ("digit", "sequence"):
        raise ValueError(f"{entry.name}: stn.kind must be digit or sequence, got {kind!r}")
    sequence = kind == "sequence"
    needed = ("length_logits", "digit_logits", "theta", "rectified") if sequence else ("logits", "rectified")
    if any(n not in outputs for n in needed):
        raise ValueError(
            f"{entry.name}: a {kind} model's outputs must include {', '.join(map(repr, needed))}, got "
            f"{sorted(outputs)}"
        )
    out_dims = _dims(outputs["rectified"])
    if sequence:  # (N, T, C, h, w): one crop per transformer
        if len(out_dims) != 5 or out_dims[1] < 1:
            raise ValueError(f"{entry.name}: a sequence model's rectified must be [N, T, 1, h, w], got {out_dims}")
        transformers = out_dims[1]
        out_dims = [out_dims[0], *out_dims[2:]]
    else:
        transformers = 1
    if "stn.output_size" in meta:
        output_size = _pair(meta["stn.output_size"], "stn.output_size")
    elif len(out_dims) == 4 and out_dims[2] > 0 and out_dims[3] > 0:
        output_size = (out_dims[2], out_dims[3])
    else:
        raise ValueError(f"{entry.name}: no stn.output_size and rectified's shape {out_dims} is not static")
    max_len = 1
    if sequence:
        digit_dims = _dims(outputs["digit_logits"])
        if len(digit_dims) != 3 or digit_dims[1] < 1 or digit_dims[2] < 2:
            raise ValueError(f"{entry.name}: digit_logits must be [N, L, classes + 1], got {digit_dims}")
        max_len = digit_dims[1]
        if _dims(outputs["length_logits"]) != [-1, max_len + 1]:
            raise ValueError(f"{entry.name}: length_logits must be [N, {max_len + 1}], got "
                             f"{_dims(outputs['length_logits'])}")
        if transformers not in (1, max_len):
            raise ValueError(f"{entry.name}: {transformers} crops for {max_len} positions (one per position, "
                             "or one for a model without transformers)")

    transform = meta.get("stn.transform", "affine")
    param_output: str | None = meta.get("stn.param_output") or PARAM_OUTPUT_BY_TRANSFORM.get(
        transform, "theta"
    )
    if param_output not in outputs:
        others = [n for n in outputs if n not in ("logits", "rectified")]
        param_output = others[0] if others else None

    # A sequence model's position classes are its labels and "no digit", the last.
    num_classes = _dims(outputs["digit_logits"])[-1] - 1 if sequence else _dims(outputs["logits"])[-1]
    if "stn.labels" in meta:
        labels = [str(x) for x in json.loads(meta["stn.labels"])]
    elif num_classes > 0:
        labels = [str(i) for i in range(num_classes)]
    else:
        raise ValueError(f"{entry.name}: no stn.labels and the logits width is not static")
    if num_classes > 0 and len(labels) != num_classes:
        raise ValueError(f"{entry.name}: {len(labels)} labels for {num_classes} logits")

    std = float(meta.get("stn.std", "1.0"))
    if std <= 0:
        raise ValueError(f"{entry.name}: stn.std must be > 0, got {std}")
    polarity = meta.get("stn.polarity", "white_on_black")
    if polarity not in ("white_on_black", "black_on_white", "any"):
        raise ValueError(
            f"{entry.name}: stn.polarity must be white_on_black, black_on_white or any, got {polarity!r}"
        )
    resize = meta.get("stn.resize", "stretch")
    if resize not in ("stretch", "letterbox"):
        raise ValueError(f"{entry.name}: stn.resize must be stretch or letterbox, got {resize!r}")
    if resize == "letterbox" and input_size[0] != input_size[1]:
        raise ValueError(f"{entry.name}: stn.resize letterbox needs a square input, got {input_size}")
    padding = meta.get("stn.padding", "zeros")
    if padding not in ("zeros", "border"):
        raise ValueError(f"{entry.name}: stn.padding must be zeros or border, got {padding!r}")
    zoom_fill = None
    if "stn.zoom_fill" in meta:
        zoom_fill = _share(meta["stn.zoom_fill"], "stn.zoom_fill", entry.name)
        if not sequence or resize != "letterbox":
            raise ValueError(f"{entry.name}: stn.zoom_fill is for a letterboxed sequence model (stn.kind sequence, "
                             f"stn.resize letterbox), got {kind} and {resize}")
    zoom_alone_below = _share(meta.get("stn.zoom_alone_below", "0.5"), "stn.zoom_alone_below", entry.name)
    return ModelSpec(
        name=entry.name,
        version=entry.version,
        input_name=input_name,
        input_size=input_size,
        output_size=output_size,
        labels=labels,
        mean=float(meta.get("stn.mean", "0.0")),
        std=std,
        polarity=polarity,
        transform=transform,
        param_output=param_output,
        output_names=list(outputs),
        output_shapes={k: _dims(v) for k, v in outputs.items()},
        metadata=dict(meta),
        resize=resize,
        padding=padding,
        kind=kind,
        max_len=max_len,
        transformers=transformers,
        zoom_fill=zoom_fill,
        zoom_alone_below=zoom_alone_below,
    )
