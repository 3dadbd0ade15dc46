"""PyTorch model -> self-contained ONNX file with a native ``GridSample`` and the metadata a server needs.

The exporter is torch's own (``torch.onnx.export(..., dynamo=True)``, the default in torch 2.13): it traces
with ``torch.export``, so the batch dimension is a real symbolic dimension (``N``) and every other dimension
is a concrete number in the graph's input/output types. While it traces, ``torch.compiler.is_exporting()``
is true, which makes ``model.transforms.affine_grid`` build the sampling grid as a matmul against a constant
base grid instead of ``F.affine_grid`` (which would become ONNX ``AffineGrid``; onnxruntime has no CUDA
kernel for it). ``check_graph`` asserts the result: a ``GridSample`` node, no ``AffineGrid``, only ops that
onnxruntime's CUDA execution provider implements at the chosen opset, and the I/O contract of
``docs/architecture.md``.

Opset 18: the dynamo exporter's own lowest opset (no version conversion pass), and below 20, so the graph's
``GridSample`` is GridSample-16, which onnxruntime's CUDA provider registers as the bounded range [16, 19]
(float). Opsets >= 21 have hit CUDA-registration gaps in onnxruntime for shape ops (Shape, Reshape,
Transpose fell back to the CPU); 18 avoids them. See docs/export.md.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort
import torch
from torch import Tensor, nn

from export.fp16 import float32_nodes, to_fp16
from export.triton import (
    MAX_BATCH_SIZE,
    MODEL_FILE,
    QUEUE_DELAY_US,
    VERSION,
    make_config,
    validate_entry,
    write_config,
)
from export.verify import (
    BATCH_SIZES,
    N_REAL,
    Tolerances,
    check_file,
    compare,
    cpu_session,
    error_count,
    label_count,
    onnx_outputs,
    random_images,
    verify,
)
from model.checkpoint import load_checkpoint
from model.nets import ModelConfig, full_config

log = logging.getLogger(__name__)

OPSET = 18
FORMAT = "stn-onnx/1"
INPUT_NAME = "image"
BATCH_DIM = "N"
PARAM_OUTPUTS = ("theta", "homography", "control_points")
SEQUENCE_ARCHS = ("seq", "seqcnn", "number", "numbercnn")
# Ops that onnxruntime's CUDA execution provider implements at opset 18 for the types used here (checked
# against onnxruntime's docs/OperatorKernels.md, CUDAExecutionProvider section). GridSample is float32 only
# there, which is why the FP16 variant keeps the sampler in float32 (export/fp16.py). Anything else in a
# graph fails the export: a new op must be checked against that list first, then added here.
CUDA_OPS = frozenset({
    "Add", "BatchNormalization", "Cast", "Clip", "Concat", "ConstantOfShape", "Conv", "Div", "Expand",
    "Flatten", "Gather", "Gemm", "GreaterOrEqual", "GridSample", "Identity", "MatMul", "MaxPool", "Mul",
    "Neg", "Relu", "Reshape", "Shape", "Slice", "Sqrt", "Squeeze", "Sub", "Transpose", "Unsqueeze", "Where",
    # The photo model (model/photo_net.py): AveragePool-11, Exp-13, ReduceMean-18, ReduceSum-13 and
    # Softmax-13 have float CUDA kernels (onnxruntime's cuda_execution_provider.cc registrations).
    "AveragePool", "Exp", "ReduceMean", "ReduceSum", "Softmax",
    # The number model (model/number_net.py) turns its line strip: Cos-7 and Sin-7 have float CUDA kernels
    # (the same registrations).
    "Cos", "Sin",
    # ... and with ``crop_length`` adds the reader's evidence to its length logits: Log-13 has a float CUDA
    # kernel (cuda/math/unary_elementwise_ops.cc, beside Cos and Sin).
    "Log",
})
METADATA_KEYS = ("stn.labels", "stn.input_size", "stn.output_size", "stn.mean", "stn.std", "stn.polarity",
                 "stn.transform", "stn.param_output", "stn.num_classes", "stn.dataset", "stn.test_error",
                 "stn.version")
# Written on every export since the photo model; a model without them is read with their defaults
# (stretch, zeros), which is what every model exported before them does.
OPTIONAL_METADATA_KEYS = ("stn.resize", "stn.padding")


class ExportError(RuntimeError):
    """The export or its verification failed; the message says what and by how much."""


def param_shape(config: ModelConfig) -> list[int]:
    """Per-sample shape of the parameter output (without the batch dimension)."""
    if config.arch == "cnn":
        return [2, 3]
    transform = config.transform
    if transform == "projective":
        return [3, 3]
    if transform == "tps":
        k = int(config.tps_grid) ** 2
        return [k, 2]
    return [2, 3]


def is_sequence(config: ModelConfig) -> bool:
    return config.arch in SEQUENCE_ARCHS


def expected_io(config: ModelConfig, output_names: Sequence[str]) -> dict[str, list[int]]:
    """``{name: per-sample dims}`` of the input and the outputs (the batch dimension is dynamic): three for a
    single-digit model; four for a sequence model (``model.seq_net``), one crop and one theta per transformer."""
    h, w = config.input_size
    oh, ow = config.output_size
    c = int(config.in_channels)
    if is_sequence(config):
        length, digits, theta, rectified, *extra = output_names
        # transformers: one per position, or none (the baselines)
        n = int(config.max_len) if config.arch in ("seq", "number") else 1
        io = {INPUT_NAME: [c, int(h), int(w)], length: [int(config.max_len) + 1],
              digits: [int(config.max_len), int(config.num_classes) + 1], theta: [n, 2, 3],
              rectified: [n, c, int(oh), int(ow)]}
        if config.arch == "number":  # the line transformer's theta and strip (model.number_net)
            from model.number_net import STRIP_SIZE

            io[extra[0]] = [2, 3]
            io[extra[1]] = [c, *STRIP_SIZE]
            if config.refine:  # the first digit transformers' crops and the refining views
                io[extra[2]] = [n, 2, 3]
                io[extra[3]] = [n, c, int(oh), int(ow)]
        return io
    logits, params, rectified, *extra = output_names
    io = {
        INPUT_NAME: [int(config.in_channels), int(h), int(w)],
        logits: [int(config.num_classes)],
        params: param_shape(config),
        rectified: [int(config.in_channels), int(oh), int(ow)],
    }
    if config.feature_transformers:  # the feature-map transformers' thetas (ST-CNN Multi)
        io[extra[0]] = [int(config.feature_transformers), 2, 3]
    return io


def export_graph(model: nn.Module, config: ModelConfig, opset: int = OPSET) -> onnx.ModelProto:
    """Trace ``model`` (eval mode) into an ONNX ModelProto with a dynamic batch dimension ``N``."""
    if model.training:
        raise ExportError("the model is in training mode; call model.eval() first (dropout, batch norm)")
    names = list(model.output_names)  # type: ignore[arg-type]
    h, w = config.input_size
    # Batch 2, not 1: torch.export specialises a dimension whose example size is 0 or 1.
    example = torch.zeros(2, int(config.in_channels), int(h), int(w))
    batch = torch.export.Dim(BATCH_DIM, min=1)
    with torch.no_grad():
        program = torch.onnx.export(
            model, (example,), dynamo=True, input_names=[INPUT_NAME], output_names=names,
            dynamic_shapes=({0: batch},), opset_version=opset, external_data=False, optimize=True,
            verbose=False, report=False,
        )
    if program is None:
        raise ExportError("torch.onnx.export returned no program")
    proto = program.model_proto
    # Intermediate value_info is redundant (onnxruntime infers it) and confuses the float16 converter.
    del proto.graph.value_info[:]
    return proto


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param if d.dim_param else d.dim_value for d in value.type.tensor_type.shape.dim]


def check_graph(proto: onnx.ModelProto, io: dict[str, list[int]], opset: int = OPSET) -> dict[str, int]:
    """Assert the exported graph keeps the contract; return its op histogram. Raises ``ExportError``."""
    ops = Counter(n.op_type for n in proto.graph.node)
    problems: list[str] = []
    if ops["GridSample"] < 1:
        problems.append("no GridSample node (the sampler must be native)")
    if ops["AffineGrid"]:
        problems.append("an AffineGrid node (onnxruntime has no CUDA kernel for it; it would run on the CPU)")
    foreign = sorted({f"{n.domain}::{n.op_type}" for n in proto.graph.node
                      if n.domain not in ("", "ai.onnx")})
    if foreign:
        problems.append(f"ops outside the default ONNX domain: {foreign}")
    no_cuda = sorted(set(ops) - CUDA_OPS)
    if no_cuda:
        problems.append(f"ops not on the checked CUDA list (export/onnx_export.py CUDA_OPS): {no_cuda}")
    if proto.functions:
        problems.append(f"local functions {[f.name for f in proto.functions]} (inline them)")
    default_opset = [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    if default_opset != [opset]:
        problems.append(f"default-domain opset {default_opset}, expected [{opset}]")
    external = [t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        problems.append(f"initializers stored as external data: {external[:5]}")

    inputs = [i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    if [i.name for i in inputs] != [INPUT_NAME]:
        problems.append(f"inputs {[i.name for i in inputs]}, expected ['{INPUT_NAME}']")
    out_names = [o.name for o in proto.graph.output]
    if out_names != list(io)[1:]:
        problems.append(f"outputs {out_names}, expected {list(io)[1:]}")
    for value in list(inputs) + list(proto.graph.output):
        if value.name not in io:
            continue
        if value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            problems.append(f"{value.name} is not float32")
        dims = _dims(value)
        want: list[int | str] = [BATCH_DIM, *io[value.name]]
        if dims != want:
            problems.append(f"{value.name} has dims {dims}, expected {want} (batch must be symbolic)")
    if problems:
        raise ExportError("exported graph breaks the contract:\n- " + "\n- ".join(problems))
    return dict(sorted(ops.items()))


def format_fraction(value: float) -> str:
    """A plain decimal string with at most 6 decimals: 0.0042 -> ``"0.0042"``, 0 -> ``"0.0"``."""
    text = f"{value:.6f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def format_error_rate(errors: int, n: int) -> str:
    """42 of 10,000 -> ``"0.0042"``."""
    return format_fraction(errors / n)


def metadata(ckpt: dict[str, Any], config: ModelConfig, output_names: Sequence[str], name: str,
             test_error: str) -> dict[str, str]:
    """The ``stn.*`` metadata_props: everything a server needs, from the checkpoint alone."""
    data = ckpt.get("data") or {}
    num_classes = int(config.num_classes)
    labels = [str(v) for v in data.get("labels") or range(num_classes)]
    if len(labels) != num_classes:
        raise ExportError(f"{len(labels)} labels in the checkpoint for {num_classes} classes")
    mean = float(data.get("mean", config.mean))
    std = float(data.get("std", config.std))
    if (mean, std) != (float(config.mean), float(config.std)):
        # The sampler's fill value (normalised black) is baked into the graph from the config.
        raise ExportError(f"data mean/std {mean}/{std} differ from the model config's {config.mean}/"
                          f"{config.std}")
    h, w = config.input_size
    if data.get("input_size") and [int(v) for v in data["input_size"]] != [int(h), int(w)]:
        raise ExportError(f"data input_size {data['input_size']} differs from the model's {[h, w]}")
    oh, ow = config.output_size
    return {
        "stn.labels": json.dumps(labels),
        "stn.input_size": f"{int(h)},{int(w)}",
        "stn.output_size": f"{int(oh)},{int(ow)}",
        "stn.mean": repr(mean),
        "stn.std": repr(std),
        "stn.polarity": str(data.get("polarity", "white_on_black")),
        "stn.transform": config.transform if config.arch in ("stcnn", "photo", "seq", "number") else "none",
        "stn.resize": str(data.get("resize", "stretch")),
        "stn.padding": "border" if config.arch in ("photo", "number", "numbercnn") else "zeros",
        "stn.param_output": "theta" if is_sequence(config) else output_names[1],
        "stn.num_classes": str(num_classes),
        "stn.dataset": str(data.get("dataset", "")),
        "stn.test_error": test_error,
        "stn.version": f"{FORMAT}:{name}",
        # A sequence model reads up to max_len digits, one per position; its test error is per digit.
        **({"stn.kind": "sequence", "stn.max_len": str(int(config.max_len))} if is_sequence(config) else {}),
    }


def zoom_metadata(config: ModelConfig, ckpt: dict[str, Any], zoom: tuple[float, float] | None) -> dict[str, str]:
    """``stn.zoom_fill`` and ``stn.zoom_alone_below`` from ``zoom`` (none: {}); only a letterboxed sequence
    model reads twice (``service.zoom``)."""
    if zoom is None:
        return {}
    fill, alone = zoom
    if not (is_sequence(config) and (ckpt.get("data") or {}).get("resize") == "letterbox"):
        raise ExportError("--zoom-fill is for a letterboxed sequence model (a number model)")
    if not (0 < fill <= 1 and 0 < alone <= 1):
        raise ExportError(f"zoom fill and alone-below must be in (0, 1], got {fill} and {alone}")
    return {"stn.zoom_fill": repr(float(fill)), "stn.zoom_alone_below": repr(float(alone))}


def set_metadata(proto: onnx.ModelProto, meta: dict[str, str], doc: str = "") -> None:
    missing = [k for k in METADATA_KEYS if k not in meta]
    if missing:
        raise ExportError(f"metadata lacks {missing}")
    keep = [p for p in proto.metadata_props if p.key not in meta]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    onnx.helper.set_model_props(proto, {**{p.key: p.value for p in keep}, **meta})
    proto.producer_name = "stn-export"
    proto.producer_version = FORMAT
    proto.model_version = 1
    if doc:
        proto.doc_string = doc


def read_metadata(proto: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


def save(proto: onnx.ModelProto, path: Path) -> None:
    """Write one self-contained file (no external-data side files); fail if that is not what landed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(path), save_as_external_data=False)
    siblings = [p.name for p in path.parent.iterdir() if p != path]
    if siblings:
        raise ExportError(f"{path.parent} holds more than the model: {siblings} (external data?)")


# --- The whole export: checkpoint -> verified Triton repository entries (+ the FP16 variant) + card. ---

NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


@dataclass
class ExportResult:
    name: str
    entry: Path
    fp16_entry: Path | None
    metadata: dict[str, str]
    ops: dict[str, int]
    card: dict[str, Any] = field(repr=False)

    @property
    def export(self) -> dict[str, Any]:
        return dict(self.card["export"])


def default_name(ckpt: dict[str, Any]) -> str:
    """``mnist-rts`` + ``affine`` -> ``mnist_rts_affine`` (``cnn`` for the baseline)."""
    cfg = ckpt["config"]
    kind = "cnn" if cfg.get("arch") in ("cnn", "seqcnn", "numbercnn") else cfg.get("transform", "affine")
    dataset = str((ckpt.get("data") or {}).get("dataset") or "model")
    return f"{dataset}_{kind}".replace("-", "_").replace(".", "_")


def _test_data(ckpt: dict[str, Any], data_dir: str | Path | None) -> tuple[Tensor, Tensor]:
    """The checkpoint's fixed test set (all 10,000 distorted MNIST-test digits), normalised."""
    from model.data import load_mnist
    from model.distort import NAMES, test_set

    dataset = str((ckpt.get("data") or {}).get("dataset", ""))
    if dataset.startswith("mnist-sequence-"):
        from model import sequence

        xs, ys, _ = sequence.test_set(load_mnist(data_dir))
        cfg = full_config(ckpt["config"])
        return (torch.from_numpy(xs)[:, None].float() / 255.0 - cfg.mean) / cfg.std, torch.from_numpy(ys)
    if dataset == "number-photo":
        from model.number import test_set as number_test_set

        side = full_config(ckpt["config"]).input_size[0]
        xs, ys, _ = number_test_set(load_mnist(data_dir), side)
        return torch.from_numpy(xs)[:, None].float() / 255.0, torch.from_numpy(ys)
    if dataset == "photo":
        from model.data import load_mnist
        from model.photo import test_set as photo_test_set

        side = full_config(ckpt["config"]).input_size[0]
        xs, ys, _ = photo_test_set(load_mnist(data_dir), side)
        return torch.from_numpy(xs)[:, None].float() / 255.0, torch.from_numpy(ys)
    kind = dataset.removeprefix("mnist-")
    if not dataset.startswith("mnist-") or kind not in NAMES:
        raise ExportError(f"no test set known for dataset {dataset!r} (expected mnist-<{'|'.join(NAMES)}>); "
                          "pass --no-data to export without real-image checks")
    x, y = test_set(kind, load_mnist(data_dir))
    cfg = full_config(ckpt["config"])
    return (x - cfg.mean) / cfg.std, y


def _source_card(checkpoint: Path, ckpt: dict[str, Any], name: str) -> tuple[dict[str, Any], str | None,
                                                                             list[Path]]:
    """(card dict, card.md text, images card.md shows) from the checkpoint's folder, else the checkpoint."""
    folder = checkpoint.parent
    if (folder / "card.json").is_file():
        card = json.loads((folder / "card.json").read_text())
        md = (folder / "card.md").read_text() if (folder / "card.md").is_file() else None
    elif ckpt.get("card"):
        card, md = copy.deepcopy(ckpt["card"]), None
    else:
        cfg = ckpt["config"]
        card = {"name": name, "arch": cfg.get("arch"), "transform": cfg.get("transform"),
                "dataset": (ckpt.get("data") or {}).get("dataset"),
                "test_error": (ckpt.get("metrics") or {}).get("test_error"),
                "note": "no model card was stored with this checkpoint"}
        md = None
    images = [folder / m for m in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", md or "") if (folder / m).is_file()]
    return card, md, images


def _export_markdown(name: str, exp: dict[str, Any]) -> str:
    par = exp["parity"]
    lines = [
        "", f"## Export (`{name}`)", "",
        f"ONNX opset {exp['opset']}, exported with {exp['exporter']}; verified with onnxruntime "
        f"{exp['onnxruntime']} (CPU) against PyTorch {exp['torch']}.", "",
        "| input set | max abs Δ " + " | max abs Δ ".join(par["max_abs"]) + " | argmax agreement |",
        "|---" * (len(par["max_abs"]) + 2) + "|",
    ]
    for s in par["sets"]:
        tied = s.get("polarity_ties", 0)
        label = s["label"] + (f" ({tied} left out: a polarity tie)" if tied else "")
        lines.append(f"| {label} | " + " | ".join(f"{v:.2g}" for v in s["max_abs"].values())
                     + f" | {100 * s['argmax_agree']:.2f}% |")
    tol = par["tolerances"]
    lines += ["", f"Bounds: logits {tol['logits']:.0e}, parameters {tol['params']:.0e}, rectified "
              f"{tol['rectified']:.0e} (docs/export.md explains the last)."]
    if any(st.get("polarity_ties") for st in par["sets"]):
        lines.append("A sample at a polarity tie (the skewness by whose sign the model flips an image within "
                     f"{tol.get('polarity_tie', 1e-4):.0e} of zero, where float32 rounding decides the flip) is left "
                     "out of its set's comparison (export/verify.py, POLARITY_TIE, or --polarity-tie).")
    if par["test"]:
        t = par["test"]
        lines.append(f"Test errors on {t['n']:,} {'digits' if exp.get('sequence') else 'images'}: PyTorch "
                     f"{t['torch_errors']}, ONNX {t['onnx_errors']}.")
    f16 = exp.get("fp16")
    if f16:
        lines += ["", f"FP16 variant `{f16['model']}` against this model on onnxruntime CPU: "
                  + ", ".join(f"max |Δ{k}| {v:.2g}" for k, v in f16["max_abs"].items())
                  + f"; argmax agreement {100 * f16['argmax_agreement']:.2f}%"
                  + (f"; test error {f16['test_error']}" if f16.get("test_error") is not None else "") + "."]
    lines += ["", "Re-export:", "", "```", exp["command"], "```", ""]
    return "\n".join(lines)


def _publish(staging: Path, out_dir: Path, names: list[str]) -> None:
    """Move finished entries into the repository, replacing older ones only once the new ones are complete."""
    for n in names:
        target = out_dir / n
        old = out_dir / f".{n}.old"
        if old.exists():
            shutil.rmtree(old)
        if target.exists():
            target.rename(old)
        (staging / n).rename(target)
        if old.exists():
            shutil.rmtree(old)


def _check_recorded(name: str, recorded: int, measured: int, n: int, card: dict[str, Any]) -> None:
    """The card's test error (from training) must be the one just measured on the ONNX model.

    Exactly, when training evaluated on the CPU, as this export does. A GPU evaluation rounds differently
    (cuDNN), so a digit on a near-tie may flip: up to 2 of 10,000 are accepted then, with a warning; the card
    and the metadata get the ONNX-measured value, and the card's export section keeps the training one.
    """
    device = str((card.get("hardware") or {}).get("device", "cpu"))
    slack = 0 if device == "cpu" else max(2, n // 5000)
    if abs(recorded - measured) > slack:
        raise ExportError(f"{name}: ONNX test error {measured}/{n} differs from the card's {recorded}/{n} "
                          f"(card evaluated on {device}; {slack} accepted)")
    if recorded != measured:
        log.warning("%s: ONNX test error %d/%d vs %d/%d on the card (evaluated on %s); the ONNX-measured "
                    "value is written", name, measured, n, recorded, n, device)


def _remove_stale_fp16(entry: Path, name: str) -> None:
    """An older ``<name>_fp16`` written by this tool belongs to the model just replaced: drop it."""
    card = entry / "card.json"
    if card.is_file() and (json.loads(card.read_text()).get("export") or {}).get("model") == name:
        log.warning("removing %s: the FP16 variant of the previous %s export", entry, name)
        shutil.rmtree(entry)


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, *, name: str | None = None,
                      fp16: bool = True, use_data: bool = True, data_dir: str | Path | None = None,
                      test_limit: int | None = None, n_real: int = N_REAL,
                      batch_sizes: Sequence[int] = BATCH_SIZES, tol: Tolerances | None = None,
                      max_batch_size: int = MAX_BATCH_SIZE, queue_delay_us: int = QUEUE_DELAY_US,
                      threads: int = 1, command: str | None = None,
                      zoom: tuple[float, float] | None = None) -> ExportResult:
    """Export ``checkpoint`` to ``out_dir/<name>/`` (and ``out_dir/<name>_fp16/``), verified; see the CLI.

    ``zoom`` = (fill, alone_below) writes ``stn.zoom_fill`` and ``stn.zoom_alone_below``: the service reads a
    letterboxed sequence model's number a second time from a window on it (``service.zoom``).

    ``use_data=False`` skips everything that needs MNIST (real-image parity, test error); ``test_limit``
    uses only the first images of the test set for the test-error comparison (then ``stn.test_error`` is
    the checkpoint's recorded value, not a measured one). Raises ``ExportError`` on any failed check; the
    repository is only touched once every check has passed.
    """
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    tol = tol or Tolerances()
    model, ckpt = load_checkpoint(checkpoint)
    config = full_config(ckpt["config"])
    name = name or default_name(ckpt)
    if not name or set(name) - NAME_CHARS:
        raise ExportError(f"model name {name!r}: use letters, digits, '_' and '-' only")
    names = list(model.output_names)  # type: ignore[arg-type]
    mean, std = float(config.mean), float(config.std)
    command = command or f"stn-export {checkpoint} --out {out_dir} --name {name}"

    proto = export_graph(model, config)
    ops = check_graph(proto, expected_io(config, names))
    log.info("exported %s: ops %s", name, ops)

    real = test = None
    if use_data:
        x, y = _test_data(ckpt, data_dir)
        real = x[:n_real]
        test = (x, y) if test_limit is None else (x[:test_limit], y[:test_limit])
    card, card_md, images = _source_card(checkpoint, ckpt, name)
    recorded = card.get("test_error")
    if recorded is None:
        recorded = (ckpt.get("metrics") or {}).get("test_error")

    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out_dir))
    try:
        path = staging / name / VERSION / MODEL_FILE
        set_metadata(proto, metadata(ckpt, config, names, name, ""))
        save(proto, path)
        check_file(path)
        session = cpu_session(path, threads)
        report = verify(model, session, names, input_size=config.input_size, mean=mean, std=std,
                        real=real, test=test, batch_sizes=batch_sizes, tol=tol)
        failures = report.failures()
        if failures:
            raise ExportError(f"{name}: ONNX does not match PyTorch:\n- " + "\n- ".join(failures))

        full_test = report.test is not None and test_limit is None
        if report.test is not None and full_test:
            measured = report.test.onnx_errors
            if recorded is not None:
                _check_recorded(name, int(round(float(recorded) * report.test.n)), measured, report.test.n,
                                card)
            test_error = format_error_rate(measured, report.test.n)
        else:
            test_error = "" if recorded is None else format_fraction(float(recorded))
        meta = {**metadata(ckpt, config, names, name, test_error), **zoom_metadata(config, ckpt, zoom)}
        set_metadata(proto, meta, doc=f"Spatial transformer network {name} ({meta['stn.transform']}), "
                                      f"exported from {checkpoint.name}")
        save(proto, path)
        check_file(path)

        exp: dict[str, Any] = {
            "model": name, "format": FORMAT, "opset": OPSET, "training_test_error": recorded,
            "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
            "torch": str(torch.__version__), "onnx": onnx.__version__, "onnxruntime": ort.__version__,
            "ops": ops, "parity": report.summary(), "test_error_measured": full_test,
            "sequence": is_sequence(config), "command": command,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        entries = [name]
        if fp16:
            f16 = _export_fp16(proto, name, staging, session, meta, real, test if full_test else None,
                               config, mean, std, threads)
            exp["fp16"] = f16
            entries.append(f16["model"])
        if test_error:
            card["test_error"] = float(test_error)
        card["export"] = exp

        for entry_name in entries:
            entry = staging / entry_name
            entry_proto = onnx.load(str(entry / VERSION / MODEL_FILE))
            write_config(entry, make_config(entry_name, entry_proto, max_batch_size, queue_delay_us))
            validate_entry(entry, entry_proto)
            entry_card = card if entry_name == name else _fp16_card(card, exp["fp16"])
            (entry / "card.json").write_text(json.dumps(entry_card, indent=2) + "\n")
            md = card_md if card_md is not None else f"# Model card: {card.get('name', name)}\n"
            (entry / "card.md").write_text(md.rstrip("\n") + "\n" + _export_markdown(entry_name, exp))
            for image in images:
                shutil.copy2(image, entry / image.name)
        _publish(staging, out_dir, entries)
        if not fp16:
            _remove_stale_fp16(out_dir / f"{name}_fp16", name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("wrote %s", ", ".join(str(out_dir / e) for e in entries))
    return ExportResult(name=name, entry=out_dir / name, fp16_entry=out_dir / entries[1] if fp16 else None,
                        metadata=meta, ops=ops, card=card)


def _export_fp16(proto: onnx.ModelProto, name: str, staging: Path, session32: Any, meta: dict[str, str],
                 real: Tensor | None, test: tuple[Tensor, Tensor] | None, config: ModelConfig,
                 mean: float, std: float, threads: int) -> dict[str, Any]:
    """Write the FP16 entry and measure it against the float32 ONNX model on onnxruntime's CPU provider."""
    name16 = f"{name}_fp16"
    proto16 = to_fp16(proto)
    path = staging / name16 / VERSION / MODEL_FILE
    set_metadata(proto16, {**meta, "stn.version": f"{FORMAT}:{name16}", "stn.test_error": ""})
    save(proto16, path)
    check_file(path)
    session16 = cpu_session(path, threads)
    x = real if real is not None else random_images(N_REAL, config.input_size, mean, std, seed=100)
    ref, got = onnx_outputs(session32, x), onnx_outputs(session16, x)
    names = [o.name for o in proto.graph.output]
    parity = compare("fp16 vs fp32", names, ref, got, Tolerances())
    result: dict[str, Any] = {
        "model": name16, "measured_on": "onnxruntime CPUExecutionProvider",
        "inputs": f"{x.shape[0]} {'real test' if real is not None else 'random'} images",
        "max_abs": parity.max_abs, "argmax_agreement": parity.argmax_agree,
        "float32_nodes": float32_nodes(proto16), "test_error": None,
    }
    if parity.argmax_agree < 0.99:
        raise ExportError(f"{name16}: argmax agrees with float32 on only {100 * parity.argmax_agree:.2f}% of "
                          f"{result['inputs']}; the float16 conversion is broken")
    if test is not None:
        errors = error_count(onnx_outputs(session16, test[0]), test[1])
        result["test_error"] = format_error_rate(errors, label_count(test[1]))
        result["test_errors"] = errors
        set_metadata(proto16, {**meta, "stn.version": f"{FORMAT}:{name16}",
                               "stn.test_error": result["test_error"]})
        save(proto16, path)
        check_file(path)
    log.info("%s: %s", name16, {k: result[k] for k in ("max_abs", "argmax_agreement", "test_error")})
    return result


def _fp16_card(card: dict[str, Any], f16: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(card)
    out["precision"] = "fp16"
    out["test_error_fp32"] = card.get("test_error")
    out["test_error"] = float(f16["test_error"]) if f16.get("test_error") else None
    return out
