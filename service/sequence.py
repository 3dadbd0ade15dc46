"""Reading a sequence model's outputs: the number, each digit's probability, and the k most probable numbers.

A sequence model (``stn.kind = sequence``, ``model.seq_net``) gives, per image, ``length_logits`` over
``0..L`` digits and ``digit_logits`` ``(L, classes + 1)``: position ``i``'s class, the last being "no digit".
The number's probability is ``P(n digits) * prod_{i < n} P(digit_i | position i holds a digit)`` (the
"no digit" class left out of the second factor), the form of Goodfellow et al. 2013; the answer is the most
probable number under it, over every length (``model.multi.decode_sequence`` and the export's check
decode the same way).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass


def softmax(logits: list[float]) -> list[float]:
    """In float64, in plain Python: for one answer's ten-odd classes, numpy's per-call overhead is most of it."""
    m = max(logits)
    e = [math.exp(v - m) for v in logits]
    total = math.fsum(e)
    return [v / total for v in e]


@dataclass(frozen=True)
class Reading:
    """The probabilities one image's outputs give."""

    length: list[float]  # P(n digits), n = 0..L
    digits: list[list[float]]  # per position, P(class | the position holds a digit), classes in label order

    @classmethod
    def of(cls, length_logits: list[float], digit_logits: list[list[float]]) -> Reading:
        """From one image's ``length_logits`` and ``digit_logits`` (as lists; "no digit" the last class, left
        out of each position's distribution)."""
        return cls(softmax(length_logits), [softmax(row[:-1]) for row in digit_logits])

    def best(self) -> tuple[list[int], list[float], float]:
        """(classes, their probabilities, the number's probability) of the most probable number."""
        tops = [max(range(len(p)), key=p.__getitem__) for p in self.digits]
        top_p = [p[c] for p, c in zip(self.digits, tops, strict=True)]
        n = max(range(len(self.length)), key=lambda k: self.length[k] * math.prod(top_p[:k]))
        return tops[:n], top_p[:n], self.length[n] * math.prod(top_p[:n])

    def top_k(self, k: int) -> list[tuple[list[int], float]]:
        """The ``k`` most probable numbers, best first (exact: per length, a beam of width ``k`` over the
        positions keeps every prefix of the ``k`` best, since the positions are independent given it)."""
        found: list[tuple[float, list[int]]] = []
        for n, p_n in enumerate(self.length):
            beam: list[tuple[float, list[int]]] = [(p_n, [])]
            for p in self.digits[:n]:
                grown = [(q * pc, [*seq, c]) for q, seq in beam for c, pc in enumerate(p)]
                beam = heapq.nlargest(k, grown, key=lambda t: t[0])
            found.extend(beam)
        found.sort(key=lambda t: -t[0])  # stable: among ties, shorter numbers and smaller digits first
        return [(seq, q) for q, seq in found[:k]]
