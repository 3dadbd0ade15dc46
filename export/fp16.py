"""The FP16 variant for GPU serving: convolutions and matrix products in float16, the sampler in float32.

Made with onnxconverter-common's ``convert_float_to_float16`` with ``keep_io_types=True``, so the inputs and
outputs stay float32 and a client cannot tell the two variants apart by their signature. Kept in float32:

- ``GridSample``: onnxruntime's CUDA kernel is float32 only (a float16 one would fall back to the CPU);
- the grid path feeding it, from the localisation net's last ``Gemm`` on (theta -> grid): float16 holds a
  normalised coordinate to about 1e-3, a fiftieth of a pixel on a 42-pixel side, which would blur
  ``rectified`` for no speed gain (these are tiny ops);
- the normalise-to-black shift around the sampler (``Sub`` before, ``Add`` after), so ``rectified`` is
  computed exactly as in the float32 model from the float32 grid.

Three converter pitfalls are worked around here: a graph output that is also consumed inside the graph
(``theta``, ``rectified``) would keep a float32 type while its consumers turned float16, so every output is
first renamed internally and re-exposed through an ``Identity``; an initializer shared by a float32 node and
a float16 one (the exporter shares equal constants, such as the photo model's variance epsilon) would
keep one type for both, so each consumer gets its own copy; and stale ``value_info`` entries are dropped
before conversion.
"""

from __future__ import annotations

import logging
import warnings

import onnx
from onnx import helper

log = logging.getLogger(__name__)

SUFFIX = "__internal"


def _detach_outputs(proto: onnx.ModelProto) -> onnx.ModelProto:
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    del model.graph.value_info[:]
    outputs = [o.name for o in model.graph.output]
    for node in model.graph.node:
        for i, name in enumerate(node.output):
            if name in outputs:
                node.output[i] = name + SUFFIX
        for i, name in enumerate(node.input):
            if name in outputs:
                node.input[i] = name + SUFFIX
    for name in outputs:
        model.graph.node.append(helper.make_node("Identity", [name + SUFFIX], [name], name=f"{name}_output"))
    _unshare_initializers(model)
    return model


def _unshare_initializers(model: onnx.ModelProto) -> None:
    """Give every node its own copy of an initializer that several nodes read (small ones only)."""
    inits = {i.name: i for i in model.graph.initializer}
    seen: dict[str, int] = {}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name not in inits:
                continue
            k = seen.get(name, 0)
            seen[name] = k + 1
            if k == 0 or len(inits[name].raw_data) + 4 * len(inits[name].float_data) > 4096:
                continue
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[name])
            copy.name = f"{name}__{k}"
            model.graph.initializer.append(copy)
            node.input[i] = copy.name


def float32_nodes(proto: onnx.ModelProto) -> list[str]:
    """Names of the nodes kept in float32: each GridSample, its grid path back to the last Gemm, and the
    elementwise shift on its image input and output."""
    producer = {out: node for node in proto.graph.node for out in node.output}
    keep: set[str] = set()
    for gs in (n for n in proto.graph.node if n.op_type == "GridSample"):
        keep.add(gs.name)
        stack = [gs.input[1]]
        while stack:
            node = producer.get(stack.pop())
            if node is None or node.name in keep:
                continue
            keep.add(node.name)
            if node.op_type != "Gemm":
                stack.extend(node.input)
        src = producer.get(gs.input[0])
        if src is not None and src.op_type in ("Sub", "Add"):
            keep.add(src.name)
        keep.update(n.name for n in proto.graph.node
                    if gs.output[0] in n.input and n.op_type in ("Add", "Sub"))
    unnamed = [n.op_type for n in proto.graph.node if not n.name]
    if unnamed:
        raise ValueError(f"nodes without names ({unnamed[:5]}) cannot be kept in float32 by name")
    return sorted(keep)


def to_fp16(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Float16 copy of ``proto`` with float32 inputs/outputs and a float32 sampler (see module docstring)."""
    from onnxconverter_common import float16

    model = _detach_outputs(proto)
    keep = float32_nodes(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Weights below float16's smallest normal are clamped to +-1e-7 by the converter; it warns per value.
        out = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=keep,
                                               disable_shape_infer=False)
    if caught:
        log.info("float16 conversion: %d warnings, e.g. %s", len(caught), caught[0].message)
    out.ir_version = proto.ir_version  # the converter may not keep it; onnxruntime caps what it reads
    log.info("float16: %d nodes kept in float32: %s", len(keep), ", ".join(keep))
    return out
