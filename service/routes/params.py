"""Query parameters of the inference routes: parsed by hand, documented from the same declaration.

FastAPI's dependency and parameter machinery costs about a fifth of a small request's CPU time on the
event loop (measured with cProfile on ``/v1/predict``: ``solve_dependencies`` 30% of the main thread).
The inference routes therefore take only the ``Request`` and read their query through a ``Param``: one
object that parses a value (``InvalidInput``, a 400 naming the parameter, for a bad one) and writes its
OpenAPI ``parameters`` entry, so the documentation cannot drift from what is accepted.

The parsing follows what FastAPI would accept for the same declaration: booleans as pydantic reads them
(``true/false``, ``1/0``, ``yes/no``, ``on/off``, ``t/f``, ``y/n``, any case), the last of repeated values,
unknown parameters ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from starlette.requests import Request

from service.errors import InvalidInput
from service.preprocess import Invert

T = TypeVar("T")

_TRUE = frozenset({"true", "1", "yes", "on", "t", "y"})
_FALSE = frozenset({"false", "0", "no", "off", "f", "n"})


@dataclass(frozen=True)
class Param(Generic[T]):
    name: str
    default: T
    description: str
    kind: str  # "int", "bool", "choice", "str"
    ge: int | None = None
    le: int | None = None
    choices: tuple[str, ...] = ()
    example: str | None = None

    def get(self, query: Mapping[str, str]) -> T:
        raw = query.get(self.name)
        if raw is None:
            return self.default
        return self.parse(raw)

    def parse(self, raw: str) -> Any:
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
        return raw

    def _bad(self, raw: str, what: str) -> InvalidInput:
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        return InvalidInput(f"invalid request: {self.name}: {what}, got {shown!r}")

    def openapi(self) -> dict[str, Any]:
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
            schema = {"type": "string"}
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
SIZE: Param[str | None] = Param(
    "size",
    None,
    "WxH (or N for NxN): sample the crop at this size from the original upload",
    "str",
    example="256x256",
)
OVERLAY: Param[bool] = Param("overlay", False, "return the upload with the sampled quadrilateral drawn", "bool")

PREDICT_PARAMS = (TOP_K, RECTIFIED, INVERT)
RECTIFY_PARAMS = (SIZE, OVERLAY, INVERT)


_NO_QUERY: Mapping[str, str] = {}


def query_of(request: Request) -> Mapping[str, str]:
    """The request's query parameters (none parsed when there is no query string: the common case)."""
    return request.query_params if request.scope.get("query_string") else _NO_QUERY


def documented(params: Sequence[Param[Any]]) -> list[dict[str, Any]]:
    return [p.openapi() for p in params]
