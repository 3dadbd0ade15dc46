"""Helpers of the deployment tests: a Dockerfile reader, a .dockerignore matcher, manifest loading, and the
names of the service's ``STN_`` settings.

No Docker engine runs where these tests run, so the Dockerfile is read as text: instructions with their
continuation lines joined, grouped into build stages. The .dockerignore matcher follows Docker's rules
(patterns in order, the last match wins, ``!`` re-includes, a pattern that matches a folder matches
everything under it, ``**`` spans folders) for the patterns this repository uses.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "compose.yaml"
K8S = ROOT / "deploy" / "k8s"
KSERVE = ROOT / "deploy" / "kserve"
REQUIREMENTS = ROOT / "requirements" / "serve.txt"
HEALTHCHECK = ROOT / "deploy" / "healthcheck.py"

# The routes that load balancers, probes and autoscalers use (docs/deploy.md lists them).
READY = "/v2/health/ready"
LIVE = "/v2/health/live"


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, ENV, ...
    args: str  # the rest of the (joined) line
    line: int  # 1-based line of the instruction's first line

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form CMD/ENTRYPOINT/HEALTHCHECK CMD, else None."""
        text = self.args
        if self.keyword == "HEALTHCHECK":
            m = re.search(r"\bCMD\s+(.*)$", text, re.S)
            if not m:
                return None
            text = m.group(1)
        text = text.strip()
        if not text.startswith("["):
            return None
        value = json.loads(text)
        return [str(v) for v in value]

    def flags(self) -> dict[str, str]:
        """``--name=value`` options of the instruction (COPY --from, HEALTHCHECK --interval)."""
        return dict(re.findall(r"--([a-z-]+)=(\S+)", self.args))


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        """The stage's ENV, in ``key=value`` form (the only form this repository uses)."""
        out: dict[str, str] = {}
        for ins in self.all("ENV"):
            for tok in shlex.split(ins.args):
                if "=" not in tok:
                    raise ValueError(f"line {ins.line}: ENV must be key=value, got {tok!r}")
                k, v = tok.split("=", 1)
                out[k] = v
        return out


def parse_dockerfile(path: Path = DOCKERFILE) -> list[Stage]:
    """The Dockerfile's stages, each with its instructions (comments dropped, continuations joined)."""
    stages: list[Stage] = []
    buf: list[str] = []
    start = 0
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.rstrip()
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if not buf:
            start = n
        if line.endswith("\\"):
            buf.append(line[:-1])
            continue
        buf.append(line)
        text = " ".join(s.strip() for s in buf)
        buf = []
        keyword, _, args = text.partition(" ")
        ins = Instruction(keyword.upper(), args.strip(), start)
        if ins.keyword == "FROM":
            m = re.match(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$", ins.args, re.I)
            if not m:
                raise ValueError(f"line {n}: cannot read FROM {ins.args!r}")
            stages.append(Stage(base=m.group(1), name=m.group(2)))
        elif not stages:
            if ins.keyword != "ARG":
                raise ValueError(f"line {n}: {ins.keyword} before the first FROM")
            continue
        stages[-1].instructions.append(ins)
    if buf:
        raise ValueError("Dockerfile ends inside a continued line")
    return stages


# ---- .dockerignore -------------------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif c == "*":
            out += "[^/]*"
            i += 1
        elif c == "?":
            out += "[^/]"
            i += 1
        elif c == "[":
            j = pattern.index("]", i)
            out += "[" + pattern[i + 1 : j].replace("!", "^", 1) + "]"
            i = j + 1
        else:
            out += re.escape(c)
            i += 1
    return re.compile(out + "$")


def read_dockerignore(path: Path = DOCKERIGNORE) -> list[tuple[bool, re.Pattern[str]]]:
    """(negated, regex) per pattern, in file order."""
    rules = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pat = line[1:].strip() if negated else line
        pat = pat.strip("/")
        rules.append((negated, _pattern_regex(pat)))
    return rules


def ignored(rel: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether Docker leaves the file ``rel`` (POSIX, relative to the context) out of the build context."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: k + 1]) for k in range(len(parts))]
    out = False
    for negated, rx in rules:
        if any(rx.match(p) for p in prefixes):
            out = not negated
    return out


def build_context(root: Path = ROOT) -> list[str]:
    """Every file Docker would send as the build context (relative POSIX paths), .dockerignore applied."""
    rules = read_dockerignore(root / ".dockerignore")
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root:  # ignored anyway (the test checks so); skip the bulk of the walk
            dirnames[:] = [d for d in dirnames if d not in (".git", ".venv")]
        for name in filenames:
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            if not ignored(rel, rules):
                files.append(rel)
    return sorted(files)


# ---- manifests and settings ----------------------------------------------------------------------------


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def settings_env_names() -> set[str]:
    """``STN_<FIELD>`` for every field of the service's settings object."""
    from service.settings import Settings

    return {"STN_" + name.upper() for name in Settings.model_fields}


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """A Kubernetes container's literal env values (valueFrom entries map to '')."""
    return {e["name"]: str(e.get("value", "")) for e in container.get("env", [])}


def duration_s(text: str | int | float) -> float:
    """Compose durations: ``35s``, ``1m30s``, ``500ms`` or a number of seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    total = 0.0
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text):
        total += float(num) * units[unit]
    return total
