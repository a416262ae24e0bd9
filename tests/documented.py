"""The commands the documentation shows, collected from the files themselves.

Sources: README.md, docs/**/*.md (subfolders such as docs/benchmarks/ included), and the
comments of configs/**/*.yaml. A command is a line of a
fenced code block (``\\`` continuations joined, a trailing ``# comment`` dropped) or an inline
code span (which may wrap across lines), split at ``&&``, that starts with one of ``PREFIXES``
once a leading ``time `` or ``$ `` is dropped. Whitespace is collapsed, so a command is one
string however the text wraps it.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PREFIXES = ("recmtl ", "python -m pipelines", "make ")
_SPAN = re.compile(r"`([^`]+)`")


def sources(root: Path = ROOT) -> list[Path]:
    """The files whose commands must run: README.md, docs/**/*.md, configs/**/*.yaml."""
    return ([root / "README.md", *sorted((root / "docs").rglob("*.md"))]
            + sorted((root / "configs").rglob("*.yaml")))


def documented_commands(root: Path = ROOT) -> dict[str, list[str]]:
    """``{command: ["README.md:12", ...]}`` over every source, in order of first appearance."""
    found: dict[str, list[str]] = {}
    for path in sources(root):
        text = path.read_text()
        pieces = _markdown(text) if path.suffix == ".md" else _yaml_comments(text)
        for line, piece in pieces:
            for command in _commands(piece):
                found.setdefault(command, []).append(f"{path.relative_to(root)}:{line}")
    return found


def _commands(piece: str) -> list[str]:
    out = []
    for part in piece.split("&&"):
        command = " ".join(part.split())
        for lead in ("time ", "$ "):
            command = command.removeprefix(lead)
        if command.startswith(PREFIXES):
            out.append(command)
    return out


def _markdown(text: str) -> list[tuple[int, str]]:
    """(line number, text) of every fenced-block line and every inline code span."""
    pieces: list[tuple[int, str]] = []
    prose: list[tuple[int, str]] = []
    fenced = False
    pending = ""
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            pieces += _spans(prose)
            prose = []
        elif fenced:
            pending += line.rstrip().removesuffix("\\")
            if not line.rstrip().endswith("\\"):
                pieces.append((number, _drop_comment(pending)))
                pending = ""
        else:
            prose.append((number, line))
    return pieces + _spans(prose)


def _yaml_comments(text: str) -> list[tuple[int, str]]:
    """Comment lines that hold a command, and the inline code spans of every comment."""
    pieces: list[tuple[int, str]] = []
    prose: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.lstrip()
        if stripped.startswith("#"):
            comment = stripped[1:]
        elif " #" in line:
            comment = line.split(" #", 1)[1]
        else:
            pieces += _spans(prose)
            prose = []
            continue
        if "`" not in comment:
            pieces.append((number, comment))
        prose.append((number, comment))
    return pieces + _spans(prose)


def _spans(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Inline code spans of consecutive prose lines; a span may wrap onto the next line, a
    blank line ends a paragraph."""
    out: list[tuple[int, str]] = []
    paragraph: list[tuple[int, str]] = []
    for number, line in [*lines, (0, "")]:
        if line.strip():
            paragraph.append((number, line))
            continue
        if paragraph:
            text = "\n".join(t for _, t in paragraph)
            starts = [0]
            for _, t in paragraph:
                starts.append(starts[-1] + len(t) + 1)
            for match in _SPAN.finditer(text):
                row = next(i for i in range(len(paragraph)) if match.start() < starts[i + 1])
                out.append((paragraph[row][0], match.group(1)))
        paragraph = []
    return out


def _drop_comment(line: str) -> str:
    return re.split(r"\s#\s", line, maxsplit=1)[0]
