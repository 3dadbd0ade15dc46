"""Query parameters of the inference routes: parsed by hand, documented from the same declaration.

FastAPI's dependency and parameter machinery costs about a fifth of a small request's CPU time on the
event loop (measured with cProfile on ``/v1/predict``: ``solve_dependencies`` 30% of the main thread).
The inference routes therefore take only the ``Request`` and read their query through a ``Param``: one
object that parses a value (``InvalidInput``, a 400 naming the parameter, for a bad one) and writes its
OpenAPI ``parameters`` entry, so the documentation cannot drift from what is accepted. A bound that is
a setting (``bound``, e.g. ``max_rectify_side``) is read from the ``Settings`` at both ends: the schema of
one server states that server's limits exactly (schemathesis checks both directions: what the schema admits
is accepted, what it excludes is refused).

The parsing follows what FastAPI would accept for the same declaration: booleans as pydantic reads them
(``true/false``, ``1/0``, ``yes/no``, ``on/off``, ``t/f``, ``y/n``, any case), the last of repeated values,
unknown parameters ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from starlette.requests import Request

from service.errors import InvalidInput
from service.preprocess import Invert
from service.settings import Settings

T = TypeVar("T")

_TRUE = frozenset({"true", "1", "yes", "on", "t", "y"})
_FALSE = frozenset({"false", "0", "no", "off", "f", "n"})


@dataclass(frozen=True)
class Param(Generic[T]):
    name: str
    default: T
    description: str
    kind: str  # "int", "bool", "choice", "size" (WxH or N, each side 1..the setting ``bound``)
    ge: int | None = None
    le: int | None = None
    choices: tuple[str, ...] = ()
    example: str | None = None
    bound: str | None = None  # the Settings field that bounds a "size"

    def get(self, query: Mapping[str, str], settings: Settings | None = None) -> T:
        raw = query.get(self.name)
        if raw is None:
            return self.default
        return self.parse(raw, settings)

    def _bound(self, settings: Settings | None) -> int:
        if self.bound is None or settings is None:
            raise TypeError(f"parameter {self.name} is bounded by a setting: pass the settings")
        value: int = getattr(settings, self.bound)
        return value

    def parse(self, raw: str, settings: Settings | None = None) -> Any:
        if self.kind == "int":
            try:
                value = int(raw.strip())
            except ValueError:
                raise self._bad(raw, "must be an integer") from None
            if (self.ge is not None and value < self.ge) or (self.le is not None and value > self.le):
                raise self._bad(raw, f"must be between {self.ge} and {self.le}")
            return value
        if self.kind == "bool":
            low = raw.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise self._bad(raw, "must be true or false")
        if self.kind == "choice":
            if raw not in self.choices:
                raise self._bad(raw, "must be one of " + ", ".join(self.choices))
            return raw
        if self.kind == "size":
            return self._size(raw, self._bound(settings))
        raise AssertionError(f"unknown parameter kind {self.kind!r}")

    def _size(self, raw: str, max_side: int) -> tuple[int, int]:
        """``"WxH"`` or ``"N"`` (N x N) -> (w, h), each side 1..``max_side``: exactly what the schema's
        ``int_range_pattern`` admits."""
        m = _SIZE.fullmatch(raw) if len(raw) <= 32 else None
        if m is None:
            raise self._bad(raw, "must be WxH or N (e.g. 256x256)")
        w = int(m.group(1))
        h = int(m.group(2)) if m.group(2) else w
        if w > max_side or h > max_side:
            raise self._bad(raw, f"sides must be between 1 and {max_side}")
        return w, h

    def _bad(self, raw: str, what: str) -> InvalidInput:
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        return InvalidInput(f"invalid request: {self.name}: {what}, got {shown!r}")

    def openapi(self, settings: Settings | None = None) -> dict[str, Any]:
        schema: dict[str, Any]
        if self.kind == "int":
            schema = {"type": "integer"}
            if self.ge is not None:
                schema["minimum"] = self.ge
            if self.le is not None:
                schema["maximum"] = self.le
        elif self.kind == "bool":
            schema = {"type": "boolean"}
        elif self.kind == "choice":
            schema = {"type": "string", "enum": list(self.choices)}
        else:
            side = int_range_pattern(self._bound(settings))
            schema = {"type": "string", "pattern": f"^{side}(?:[xX]{side})?$"}
        if self.default is not None:
            schema["default"] = self.default
        entry: dict[str, Any] = {
            "name": self.name,
            "in": "query",
            "required": False,
            "description": self.description,
            "schema": schema,
        }
        if self.example is not None:
            entry["example"] = self.example
        return entry


TOP_K: Param[int] = Param("top_k", 5, "how many classes in top_k", "int", ge=1, le=1000)
RECTIFIED: Param[bool] = Param("rectified", False, "include the rectified input as a base64 PNG", "bool")
INVERT: Param[Invert] = Param(
    "invert", "auto", "polarity: auto (border vs whole), true, false", "choice", choices=("auto", "true", "false")
)
SIZE: Param[tuple[int, int] | None] = Param(
    "size",
    None,
    "WxH (or N for NxN), each side from 1 to the server's max_rectify_side: sample the crop at this size "
    "from the original upload",
    "size",
    example="256x256",
    bound="max_rectify_side",
)
OVERLAY: Param[bool] = Param("overlay", False, "return the upload with the sampled quadrilateral drawn", "bool")

INDEX: Param[int | None] = Param(
    "index",
    None,
    "which crop: a sequence model has one per transformer (digit position, 0 = leftmost), returned side by "
    "side without it; a single-digit model has crop 0 only",
    "int",
    ge=0,
    le=15,
)

ZOOM: Param[bool] = Param(
    "zoom",
    True,
    "a sequence model whose metadata has stn.zoom_fill (stn_number) reads the number a second time from a "
    "window around the digits its first reading found (docs/service.md); false: one reading. Other models "
    "ignore it",
    "bool",
)

PREDICT_PARAMS = (TOP_K, RECTIFIED, INVERT, ZOOM)
RECTIFY_PARAMS = (SIZE, OVERLAY, INVERT, INDEX, ZOOM)


_NO_QUERY: Mapping[str, str] = {}


def query_of(request: Request) -> Mapping[str, str]:
    """The request's query parameters (none parsed when there is no query string: the common case)."""
    return request.query_params if request.scope.get("query_string") else _NO_QUERY


def documented(params: Sequence[Param[Any]], settings: Settings | None = None) -> list[dict[str, Any]]:
    return [p.openapi(settings) for p in params]


_SIDE = r"[1-9][0-9]*"
_SIZE = re.compile(rf"({_SIDE})(?:[xX]({_SIDE}))?", re.ASCII)  # ASCII: no other digits


def int_range_pattern(n: int) -> str:
    """A regular expression (no anchors) for the decimal integers 1..``n``, no leading zeros."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    digits = str(n)
    parts = [f"[1-9][0-9]{{0,{len(digits) - 2}}}"] if len(digits) > 1 else []
    # Numbers with as many digits as n and at most n: n's prefix, a smaller digit, then anything.
    for i, ch in enumerate(digits):
        lo, hi = (1 if i == 0 else 0), int(ch) - 1
        if hi >= lo:
            rest = len(digits) - i - 1
            parts.append(digits[:i] + f"[{lo}-{hi}]" + (f"[0-9]{{{rest}}}" if rest else ""))
    parts.append(digits)
    return "(?:" + "|".join(parts) + ")"
