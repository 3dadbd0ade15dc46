"""Parity of an exported model with PyTorch: onnxruntime (CPU) against the eager model, failing loudly.

What is compared, per input set: the maximum absolute difference of every output, and argmax agreement of
the logits (of every ``*logits`` output, at every position, for a sequence model). Input sets: real
distorted test images, and random images at several batch sizes (which also proves the batch dimension is
dynamic). Test error: the full fixed test set through both runtimes.

Tolerances (``Tolerances``): logits 1e-4 and argmax 100% as the export issue asks; the parameter output
(theta etc.) 1e-5; ``rectified`` 5e-5, not the issue's 1e-5, because 1e-5 is below what a float32 bilinear
sampler resolves: a normalised grid coordinate carries a rounding error of about 1e-7, which is 2e-6 pixels
on a 42-pixel side, times a stroke edge of up to 3.2 normalised units per pixel. PyTorch's own float32
output differs from its float64 output by 0.8-1.5e-5 on the same inputs, and onnxruntime's GridSample
denormalises coordinates with a differently rounded formula than PyTorch's. docs/export.md has the numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

BATCH_SIZES = (1, 7, 256)
# Outputs that are sampled images, bounded as ``rectified`` is: the crops, and the number model's line strip
# and refining views.
IMAGE_OUTPUTS = ("rectified", "line", "context")
# A model that flips an image's polarity by the sign of its skewness (model.photo_net.standardise) has a
# discontinuity where the skewness is zero: within float32 rounding of it, the two runtimes may flip
# differently and everything downstream differs. Such a sample is a tie, as near-equal logits are.
POLARITY_TIE = 1e-4
N_REAL = 256
EVAL_BATCH = 500


@dataclass(frozen=True)
class Tolerances:
    logits: float = 1e-4
    params: float = 1e-5
    rectified: float = 5e-5
    # How near zero a flipping skewness is a tie: the runtimes' sampled images differ by up to ``rectified``,
    # so a model whose crops come out of more stages (wider bounds) has wider ties.
    polarity_tie: float = POLARITY_TIE

    def for_output(self, name: str) -> float:
        """The bound for an output by its name: ``*logits``, ``rectified``, else the transform's parameters."""
        if name.endswith("logits"):
            return self.logits
        return self.rectified if name in IMAGE_OUTPUTS else self.params


@dataclass
class Parity:
    """One input set through both runtimes."""

    label: str
    n: int
    max_abs: dict[str, float]
    argmax_agree: float
    disagreements: int
    # Disagreements where PyTorch's two top logits are within the logits tolerance: a tie, not a fault.
    ties: int = 0
    # Samples left out of the comparison: at a polarity tie in PyTorch (``POLARITY_TIE``; uniform noise only).
    polarity_ties: int = 0

    def failures(self, names: Sequence[str], tol: Tolerances) -> list[str]:
        out = [f"{self.label}: max |d{name}| = {self.max_abs[name]:.3g} > {tol.for_output(name):.0e}"
               for name in names if not self.max_abs[name] <= tol.for_output(name)]
        if self.disagreements > self.ties:
            out.append(f"{self.label}: argmax differs on {self.disagreements - self.ties} of {self.n} inputs")
        return out


@dataclass
class TestErrors:
    n: int
    torch_errors: int
    onnx_errors: int


@dataclass
class Report:
    names: list[str]
    tolerances: Tolerances
    parity: list[Parity] = field(default_factory=list)
    test: TestErrors | None = None

    def failures(self) -> list[str]:
        out = [f for p in self.parity for f in p.failures(self.names, self.tolerances)]
        if self.test and self.test.torch_errors != self.test.onnx_errors:
            out.append(f"test error differs: PyTorch {self.test.torch_errors} vs ONNX "
                       f"{self.test.onnx_errors} of {self.test.n}")
        return out

    def max_abs(self) -> dict[str, float]:
        return {name: max(p.max_abs[name] for p in self.parity) for name in self.names}

    def summary(self) -> dict[str, Any]:
        return {
            "max_abs": self.max_abs(),
            "argmax_agreement": min(p.argmax_agree for p in self.parity),
            "tolerances": asdict(self.tolerances),
            "sets": [asdict(p) for p in self.parity],
            "test": asdict(self.test) if self.test else None,
        }


def cpu_session(model: str | Path | bytes, threads: int = 1) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def check_file(path: str | Path) -> None:
    """``onnx.checker`` with ``full_check`` (type and shape inference too); raises on any fault."""
    onnx.checker.check_model(str(path), full_check=True)


def random_images(n: int, size: Sequence[int], mean: float, std: float, seed: int,
                  channels: int = 1) -> Tensor:
    """Normalised images of independent uniform 8-bit pixels: the roughest input the service can send."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (n, channels, int(size[0]), int(size[1])), generator=g).float() / 255.0
    return (pixels - mean) / std


@torch.no_grad()
def torch_outputs(model: nn.Module, x: Tensor, batch: int = EVAL_BATCH) -> list[np.ndarray]:
    parts = [[t.numpy() for t in model(x[i:i + batch])] for i in range(0, x.shape[0], batch)]
    return [np.concatenate(p) for p in zip(*parts, strict=True)]


def onnx_outputs(session: ort.InferenceSession, x: Tensor | np.ndarray,
                 batch: int = EVAL_BATCH) -> list[np.ndarray]:
    arr = x.numpy() if isinstance(x, Tensor) else x
    name = session.get_inputs()[0].name
    parts = [session.run(None, {name: arr[i:i + batch]}) for i in range(0, arr.shape[0], batch)]
    return [np.concatenate(p) for p in zip(*parts, strict=True)]


def compare(label: str, names: Sequence[str], ref: Sequence[np.ndarray], got: Sequence[np.ndarray],
            tol: Tolerances, exclude: np.ndarray | None = None) -> Parity:
    """Both runtimes' outputs on one input set; ``exclude`` (N,) marks samples at a polarity tie, left out."""
    if exclude is not None and exclude.any():
        keep = ~exclude
        n_tied = int(exclude.sum())
        ref, got = [a[keep] for a in ref], [b[keep] for b in got]
        return replace(compare(label, names, ref, got, tol), polarity_ties=n_tied)
    for name, a, b in zip(names, ref, got, strict=True):
        if a.shape != b.shape:
            raise AssertionError(f"{label}: {name} has shape {b.shape} from ONNX, {a.shape} from PyTorch")
    max_abs = {name: float(np.abs(a.astype(np.float64) - b).max())
               for name, a, b in zip(names, ref, got, strict=True)}
    # Every class decision agrees: each ``*logits`` output's argmax over its last axis, at every position
    # (a sequence model has a length and one decision per digit). A sample whose differing decisions are
    # all near-ties in PyTorch's logits is a tie, not a fault.
    n = int(ref[0].shape[0])
    differ = np.zeros(n, bool)
    not_tie = np.zeros(n, bool)
    for name, a, b in zip(names, ref, got, strict=True):
        if not name.endswith("logits"):
            continue
        a2, b2 = a.reshape(n, -1, a.shape[-1]), b.reshape(n, -1, b.shape[-1])
        d = a2.argmax(-1) != b2.argmax(-1)  # (n, positions)
        top2 = np.sort(a2, axis=-1)[..., -2:]
        close = top2[..., 1] - top2[..., 0] <= tol.logits
        differ |= d.any(1)
        not_tie |= (d & ~close).any(1)
    return Parity(label=label, n=n, max_abs=max_abs, argmax_agree=float(1.0 - differ.mean()),
                  disagreements=int(differ.sum()), ties=int((differ & ~not_tie).sum()))


NO_DIGIT = 10  # a sequence model's "no digit" class (model.multi.NO_DIGIT; export needs no model import)


def error_count(outputs: Sequence[np.ndarray], labels: Tensor | np.ndarray) -> int:
    """Wrong answers: the class (``labels`` ``(N,)``) from ``outputs[0]``, the logits; or, for a sequence
    model (``labels`` ``(N, L)`` digits), the wrong digits, position ``i`` against digit ``i``, of the most
    probable number given the length (``outputs[0]``) and digit logits (``outputs[1]``): a position past
    its length reads no digit."""
    y = labels.numpy() if isinstance(labels, Tensor) else labels
    if y.ndim == 1:
        return int((outputs[0].argmax(1) != y).sum())
    # The most probable number over every length (model.multi.best_lengths): log P(n) + the n best digits'.
    length, digit = outputs[0].astype(np.float64), outputs[1][..., :NO_DIGIT].astype(np.float64)
    log_len = length - length.max(1, keepdims=True)
    log_len -= np.log(np.exp(log_len).sum(1, keepdims=True))
    log_dig = digit - digit.max(-1, keepdims=True)
    log_top = -np.log(np.exp(log_dig).sum(-1))  # log of each position's best softmax probability
    n = (log_len + np.concatenate([np.zeros((len(y), 1)), log_top.cumsum(1)], axis=1)).argmax(1)
    digits = digit.argmax(-1)
    digits[np.arange(digits.shape[1])[None] >= n[:, None]] = NO_DIGIT
    return int((digits[:, : y.shape[1]] != y).sum())


@torch.no_grad()
def polarity_ties(model: nn.Module, x: Tensor, tie: float = POLARITY_TIE) -> np.ndarray | None:
    """(N,) samples at which the model's polarity decision is a tie (|skewness| < ``tie`` in PyTorch), for a
    model that says (a ``polarity_skew(x)`` method: (N, K) the skewness of each image it flips)."""
    skew = getattr(model, "polarity_skew", None)
    if skew is None:
        return None
    return (skew(x).abs() < tie).any(1).numpy()


def label_count(labels: Tensor | np.ndarray) -> int:
    """What ``error_count`` counts errors out of: the samples; for a sequence model, the true digits
    (positions past a number's end hold ``NO_DIGIT``)."""
    y = labels.numpy() if isinstance(labels, Tensor) else labels
    return int((y != NO_DIGIT).sum()) if y.ndim == 2 else int(y.size)


def verify(model: nn.Module, session: ort.InferenceSession, names: Sequence[str], *,
           input_size: Sequence[int], mean: float, std: float,
           real: Tensor | None = None, test: tuple[Tensor, Tensor] | None = None,
           batch_sizes: Sequence[int] = BATCH_SIZES, tol: Tolerances | None = None, seed: int = 0) -> Report:
    """Run every comparison and return the report (``report.failures()`` lists what broke a bound).

    ``real``: normalised real test images (compared as one batch). ``test``: normalised images and labels
    whose error rate must be the same in both runtimes (the full fixed test set in a real export; for a
    sequence model, labels ``(N, L)`` and the error counted per digit).
    """
    tol = tol or Tolerances()
    report = Report(names=list(names), tolerances=tol)
    channels = int(session.get_inputs()[0].shape[1])
    if real is not None:
        ref = torch_outputs(model, real, batch=real.shape[0])
        got = onnx_outputs(session, real, batch=real.shape[0])
        report.parity.append(compare(f"{real.shape[0]} real test images", names, ref, got, tol,
                                     polarity_ties(model, real, tol.polarity_tie)))
    for i, n in enumerate(batch_sizes):
        x = random_images(n, input_size, mean, std, seed=seed + i, channels=channels)
        # One run at batch n, so the graph really takes that batch size.
        ref = torch_outputs(model, x, batch=n)
        got = onnx_outputs(session, x, batch=n)
        report.parity.append(compare(f"random images, batch {n}", names, ref, got, tol,
                                     polarity_ties(model, x, tol.polarity_tie)))
    if test is not None:
        x, y = test
        report.test = TestErrors(n=label_count(y), torch_errors=error_count(torch_outputs(model, x), y),
                                 onnx_errors=error_count(onnx_outputs(session, x), y))
    for p in report.parity:
        if p.polarity_ties:
            log.warning("%s: %d of %d left out, at a polarity tie (|skewness| < %g)", p.label, p.polarity_ties,
                        p.n + p.polarity_ties, tol.polarity_tie)
        deltas = ", ".join(f"max|d{k}| {v:.2g}" for k, v in p.max_abs.items())
        log.info("%s: %s, argmax %.4f", p.label, deltas, p.argmax_agree)
    if report.test:
        log.info("test errors on %d images: PyTorch %d, ONNX %d", report.test.n, report.test.torch_errors,
                 report.test.onnx_errors)
    return report
