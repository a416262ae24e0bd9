"""What every bench shares: its command line, timing beside a baseline in the same run, the
JSON it writes and the table it prints.

A bench's ``main`` builds its parser with ``bench_parser`` (adding only its own flags), parses
with ``parse``, runs its body through ``run_bench`` and ends with ``write_results`` and
``print_table``. On this shared, noisy machine only ratios measured in the same run mean
anything, so comparisons go through ``interleave`` / ``paired``: the variant and its baseline
take turns, and each round gives one ratio.
"""

from __future__ import annotations

import argparse
import json
import numbers
import os
import platform
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pipelines.cli import run_guarded
from recmtl.logs import quiet_third_party

ConfigArg = Literal["required", "optional", "none"]
_OVERRIDE = re.compile(r"[A-Za-z_]\w*(\.\w+)*=")
_NUMBER_TEXT = re.compile(r"[-+]?[\d,]*\.?\d+")  # a number already formatted: "+0.0450", "1,234"


# --- arguments ---------------------------------------------------------------------------------

def override(text: str) -> str:
    """argparse type of one ``dotted.key=value``: the form is checked here, the value by the config."""
    if not _OVERRIDE.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not dotted.key=value")
    return text


def bench_parser(name: str, description: str | None, *, config: ConfigArg = "none",
                 default_config: str | None = None, overrides: bool | None = None,
                 json_default: str | None = None, out_alias: bool = False,
                 repeats: int | None = None, repeats_help: str = "rounds of the timed comparison"
                 ) -> argparse.ArgumentParser:
    """The parser of ``python -m pipelines.bench.<name>`` with the flags every bench shares.

    ``config``: a positional config path, required or optional (``default_config``);
    ``overrides`` (default: where there is a config): ``dotted.key=value`` positionals;
    ``--json PATH`` (also ``--out`` where ``out_alias``, the older name); ``--repeats N`` where
    ``repeats`` gives its default.
    """
    parser = argparse.ArgumentParser(prog=f"python -m pipelines.bench.{name}",
                                     description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(bench=name)
    if config != "none":
        parser.add_argument("config", nargs=None if config == "required" else "?",
                            default=default_config, help="a recmtl config (YAML)")
    if overrides if overrides is not None else config != "none":
        parser.add_argument("overrides", nargs="*", type=override, metavar="dotted.key=value",
                            help="config overrides, applied in order")
    flags = ("--json", "--out") if out_alias else ("--json",)
    parser.add_argument(*flags, dest="json", default=json_default, metavar="PATH",
                        help="write the results here as JSON"
                             + (f" (default: {json_default})" if json_default else ""))
    if repeats is not None:
        parser.add_argument("--repeats", type=int, default=repeats,
                            help=f"{repeats_help} (default: {repeats})")
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses ``argv`` (default: this process's), flags and positionals in any order; keeps the
    command line as ``args.command`` for the JSON."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_intermixed_args(argv)
    args.command = shlex.join(["python", "-m", f"pipelines.bench.{args.bench}", *argv])
    return args


def run_bench(job: Callable[[], object]) -> int:
    """Runs a bench's body as the CLI runs a command: third-party chatter quiet, an expected
    failure one ``bench: error: ...`` line and exit code 2."""
    quiet_third_party()
    return run_guarded(job, prog="bench")


# --- timing beside a baseline ------------------------------------------------------------------

@dataclass(frozen=True)
class Interleaved:
    """Figures of callables that took turns, in call order, and the baseline they compare to."""

    baseline: str
    runs: dict[str, list[float]]

    def median(self, name: str) -> float:
        return statistics.median(self.runs[name])

    def ratios(self, name: str) -> list[float]:
        """``name``'s figure over the baseline's, one per round."""
        return [a / b for a, b in zip(self.runs[name], self.runs[self.baseline], strict=True)]

    def ratio(self, name: str) -> float:
        """The median of the per-round ratios."""
        return statistics.median(self.ratios(name))

    def summary(self) -> dict[str, dict[str, Any]]:
        """For the JSON: per name its runs and median, and but for the baseline its ratios."""
        return {name: {"median": self.median(name), "runs": runs}
                | ({} if name == self.baseline
                   else {"ratios": self.ratios(name), "ratio": self.ratio(name)})
                for name, runs in self.runs.items()}


def interleave(calls: Mapping[str, Callable[[], float]], baseline: str, repeats: int,
               warmup: int = 0) -> Interleaved:
    """Calls every callable once per round, in the mapping's order, ``warmup`` rounds unkept
    then ``repeats`` kept; each returns its figure (seconds, samples/s...). Turns, not one block
    each: a busy moment of the machine hits every callable."""
    if baseline not in calls:
        raise ValueError(f"baseline {baseline!r} is not one of {list(calls)}")
    for _ in range(warmup):
        for call in calls.values():
            call()
    runs: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            runs[name].append(float(call()))
    return Interleaved(baseline, runs)


def paired(variant: Callable[[], float], baseline: Callable[[], float], repeats: int,
           warmup: int = 0) -> Interleaved:
    """``variant``, ``baseline``, ``variant``, ``baseline``...; named so in the result."""
    return interleave({"variant": variant, "baseline": baseline}, "baseline", repeats, warmup)


def timed(call: Callable[[], object]) -> Callable[[], float]:
    """``call`` returning the wall seconds it took instead of its value."""
    def seconds() -> float:
        start = time.perf_counter()
        call()
        return time.perf_counter() - start
    return seconds


# --- JSON out ----------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import torch  # here, not at the top: a bench that needs no torch starts without it

    return {"cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__}


def envelope(args: argparse.Namespace, results: Any) -> dict[str, Any]:
    """Every bench's JSON: which bench, its command line, the machine, when, its results."""
    return {"bench": args.bench, "command": args.command, "machine": machine(),
            "date": datetime.now().astimezone().isoformat(timespec="seconds"), "results": results}


def write_results(args: argparse.Namespace, results: Any,
                  default: str | Path | None = None) -> Path | None:
    """Writes the envelope to ``--json`` (else ``default``; neither: nothing); says where."""
    target = args.json or default
    if not target:
        return None
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(envelope(args, results), indent=2, default=_plain))
    print(f"wrote {path}", flush=True)
    return path


def _plain(value: Any) -> Any:
    # numpy and torch values, and paths, are the only non-JSON things benches hold
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return float(value)


# --- the printed table -------------------------------------------------------------------------

def format_table(rows: Sequence[Mapping[str, Any]], formats: Mapping[str, str] | None = None,
                 markdown: bool = False) -> str:
    """Rows as a table; columns in order of first appearance, a missing cell blank, None "-".

    Numbers take ``formats[column]`` (a format spec) or: ints ``1,234``, floats ``0.1235``
    under 1000 and ``1,235`` from there. Aligned text: columns of numbers (or of numbers
    already formatted as text) right-aligned, others left; ``markdown``: unpadded Markdown, for
    the docs.

    Example:
        >>> print(format_table([{"model": "mmoe", "auc": 0.81234}, {"model": "ple", "auc": None}]))
        model     auc
        -----  ------
        mmoe   0.8123
        ple         -
    """
    columns = list(dict.fromkeys(key for row in rows for key in row))
    if not columns:
        return ""
    formats = formats or {}
    cells = [[_cell(row[c], formats.get(c)) if c in row else "" for c in columns] for row in rows]
    if markdown:
        return "\n".join("| " + " | ".join(line) + " |"
                         for line in [columns, ["---"] * len(columns), *cells])
    numeric = [all(row.get(c) is None or _is_number(row[c])
                   or bool(_NUMBER_TEXT.fullmatch(str(row[c]))) for row in rows) for c in columns]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]

    def aligned(line: list[str]) -> str:
        return "  ".join(v.rjust(w) if right else v.ljust(w)
                         for v, w, right in zip(line, widths, numeric, strict=True)).rstrip()

    return "\n".join([aligned(columns), aligned(["-" * w for w in widths]),
                      *(aligned(line) for line in cells)])


def print_table(rows: Sequence[Mapping[str, Any]], formats: Mapping[str, str] | None = None,
                markdown: bool = False) -> None:
    """Prints ``format_table`` of the rows (flushed: benches run long)."""
    print(format_table(rows, formats, markdown), flush=True)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _cell(value: Any, spec: str | None) -> str:
    if value is None:
        return "-"
    if not _is_number(value):
        return str(value)
    if spec:
        return format(value, spec)
    if isinstance(value, numbers.Integral):
        return f"{value:,}"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4f}"
