"""The long documented commands (``heavy`` entries of ``TABLE``) parse, in ``make test``.

``make test-heavy`` runs them; here each one's documented text, exactly as written (no
small-data overrides), goes through its own program's argument parser, which is stopped as
soon as it has parsed: the flags and their order are the program's, and the config it names
loads with the overrides it shows. Nothing is trained or generated. A config that a step before
writes (``data/census/census.yaml`` from ``recmtl prepare-census``...) is checked through the
checked-in config it starts from.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

from recmtl.config import load_config
from tests.documented import ROOT
from tests.test_documented_commands import DOCUMENTED, Entry, _entry

# Configs written by a documented step, and the checked-in config each starts from (`base:`).
STAND_INS = {
    "data/census/census.yaml": "configs/census.yaml",
    "data/longtail/prepared/longtail.yaml": "configs/longtail/longtail.yaml",
}


class _Parsed(Exception):
    def __init__(self, namespace: argparse.Namespace) -> None:
        super().__init__("parsed")
        self.namespace = namespace


def _argv(command: str, entry: Entry) -> list[str]:
    text = command
    for old, new in entry.subs:
        text = text.replace(old, new)
    text = re.sub(r"\{(bundle|out|run|run_id)\}", r"\1", text)  # what a run would fill in
    return shlex.split(text)


def _parse(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    """The namespace the program's own parser makes of ``argv``, without running the program."""
    if argv[0] == "recmtl":
        module, args = "pipelines.cli", argv[1:]
    else:
        assert argv[:2] == ["python", "-m"], argv
        module, args = argv[2], argv[3:]
    main: Any = importlib.import_module(module).main
    inside: list[bool] = []  # the outermost parse is the program's; argparse nests them

    for name in ("parse_args", "parse_intermixed_args", "parse_known_args"):
        original = getattr(argparse.ArgumentParser, name)

        def stop(self: argparse.ArgumentParser, *a: Any, _original: Any = original,
                 _known: bool = name == "parse_known_args", **k: Any) -> Any:
            if inside:
                return _original(self, *a, **k)
            inside.append(True)
            try:
                parsed = _original(self, *a, **k)
            finally:
                inside.pop()
            if _known:  # (namespace, the arguments left over): the program takes key=value
                namespace, extra = parsed
                if any(x.startswith("-") or "=" not in x for x in extra):
                    self.error(f"unrecognized arguments: {' '.join(extra)}")
                namespace.overrides = [*getattr(namespace, "overrides", []), *extra]
                raise _Parsed(namespace)
            raise _Parsed(parsed)

        monkeypatch.setattr(argparse.ArgumentParser, name, stop)
    monkeypatch.setattr(sys, "argv", [argv[0], *args])
    try:
        main()
    except _Parsed as parsed:
        return parsed.namespace
    except SystemExit as e:
        pytest.fail(f"`{shlex.join(argv)}` does not parse (exit {e.code}): see stderr above")
    pytest.fail(f"`{shlex.join(argv)}`: {module}.main() returned without parsing its arguments")


HEAVY = [c for c in DOCUMENTED if _entry(c).kind == "heavy"]


@pytest.mark.parametrize("command", HEAVY, ids=[c[:90] for c in HEAVY])
def test_heavy_command_parses(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    print(f"documented at {', '.join(DOCUMENTED[command])}")
    namespace = _parse(_argv(command, _entry(command)), monkeypatch)
    config = getattr(namespace, "config", None)
    if config is None:
        return
    path = Path(STAND_INS.get(str(config), str(config)))
    assert (ROOT / path).is_file(), f"`{command}`: no config {path} in the checkout"
    load_config(ROOT / path, list(getattr(namespace, "overrides", None) or []))
