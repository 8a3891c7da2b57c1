"""Read a rollout export (the workbench's `X` file or `rmx score --json`) into a figure-ready record."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.core.errors import RmxError
from engine.core.records import TokenScore

FORMATS = ("html", "svg", "json", "tex")
"""What `rmx export` writes; the file suffix is the format's name."""

MARKED_SOURCES = {"forced": "forced by the user", "teacher": "the teacher's pick (intervention)",
                  "random": "a random pick (control)"}
"""Who chose a token, when it was not the base's own sample."""


@dataclass(frozen=True)
class FigureRollout:
    """One completion with everything a figure shows: tokens, who chose them, and what problem it answers."""

    title: str
    problem: str | None
    tokens: tuple[TokenScore, ...]
    sources: tuple[str, ...]
    """Who chose each token (base, teacher, forced, random); "base" for every token when the file has none."""
    answer: str | None = None
    correct: bool | None = None

    def span(self, start: int | None, end: int | None) -> "FigureRollout":
        """Tokens [start, end) only (positions counted from the first completion token)."""
        count = len(self.tokens)
        first = 0 if start is None else start
        last = count if end is None else end
        if not 0 <= first < last <= count:
            raise RmxError(f"span {first}:{last} is outside the rollout's {count} tokens (0:{count})")
        return FigureRollout(self.title, self.problem, self.tokens[first:last], self.sources[first:last],
                             self.answer, self.correct)

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "problem": self.problem, "answer": self.answer, "correct": self.correct,
                "sources": list(self.sources), "tokens": [token.to_json() for token in self.tokens]}


def load_rollout(path: str | Path) -> FigureRollout:
    """The rollout in `path`; a missing or malformed file is an RmxError naming it."""
    return rollout_from_data(read_export(path), str(path), Path(path).stem)


def read_export(path: str | Path) -> Any:
    """The JSON in an export file (a rollout or a branch comparison); missing or not JSON is an RmxError naming it."""
    file = Path(path)
    if not file.is_file():
        raise RmxError(f"rollout file not found: {path}")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RmxError(f"{path}: not a JSON rollout export ({error})") from None


def rollout_from_data(data: Any, path: str, default_title: str = "rollout") -> FigureRollout:
    """A rollout from the export's JSON shape; `path` names it in errors."""
    if not isinstance(data, dict) or not isinstance(data.get("tokens"), list) or not data["tokens"]:
        raise RmxError(f"{path}: not a rollout export (needs a non-empty 'tokens' list, as `X` or `rmx score --json` write)")
    try:
        tokens = tuple(TokenScore.from_json(token) for token in data["tokens"])
    except (KeyError, TypeError, ValueError) as error:
        raise RmxError(f"{path}: malformed token in the rollout ({type(error).__name__}: {error})") from None
    for token in tokens:
        if not (isinstance(token.text, str) and isinstance(token.entropy, (int, float)) and math.isfinite(token.entropy)):
            raise RmxError(f"{path}: token {token.pos} has no text or no finite entropy")
    sources = data.get("sources") or ["base"] * len(tokens)
    if not isinstance(sources, list) or len(sources) != len(tokens) or not all(isinstance(s, str) for s in sources):
        raise RmxError(f"{path}: 'sources' must name who chose each of the {len(tokens)} tokens")
    problem = data.get("problem") if isinstance(data.get("problem"), dict) else {}
    title = " · ".join(str(part) for part in (problem.get("id"), data.get("label")) if part) or default_title
    return FigureRollout(title=title, problem=problem.get("problem"), tokens=tokens, sources=tuple(sources),
                         answer=data.get("answer"), correct=data.get("correct"))


def free_path(path: Path) -> Path:
    """`path`, or `name-1.ext`, `name-2.ext`, … : the first that does not exist yet."""
    candidate, number = path, 0
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
    return candidate


def write_new(path: Path, text: str, force: bool) -> Path:
    """Write `text` to `path`, refusing to replace an existing file unless `force`."""
    if path.exists() and not force:
        raise RmxError(f"{path} exists: give --force to overwrite it")
    if path.exists() and not path.is_file():
        raise RmxError(f"{path} exists and is not a file")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
