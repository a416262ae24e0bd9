"""What the daily job has done in its work directory: ``<work_dir>/daily.json``.

The ledger lists every finished day (its data, run, AUCs, decision and seconds) and the day in
progress, if any: its prepared data and its run directory. It is rewritten (atomically) as
each step of a day ends, so a job killed at any point and run again knows where it stood:

- the next invocation trains only the days after the last finished one, from that day's
  preparation (vocabularies) and model (weights);
- a day in progress is taken up where it stopped: its preparation is kept, its run resumes
  from its newest checkpoint (``pipelines/jobs/train.py``), a run that had finished is not
  trained again;
- ``redo`` forgets a day and every day after it: they are prepared and trained again from
  the day before.

One work directory belongs to one model in one MLflow store and experiment; a config that
names others is refused rather than mixed in.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recmtl.errors import ConfigError

LEDGER = "daily.json"


@dataclass
class Ledger:
    path: Path
    owner: dict[str, str]  # model, alias, tracking_uri, experiment
    days: list[dict[str, Any]] = field(default_factory=list)  # finished, in order
    current: dict[str, Any] | None = None  # the day in progress

    @classmethod
    def open(cls, work: Path, owner: dict[str, str]) -> Ledger:
        """The ledger in ``work`` (a new one if there is none), checked against ``owner``."""
        path = work / LEDGER
        if not path.exists():
            return cls(path, owner)
        try:
            raw = json.loads(path.read_text())
            held = {k: raw[k] for k in owner}
            days, current = list(raw["days"]), raw.get("in_progress")
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{path}: not a daily job's ledger ({type(e).__name__}: {e}); "
                              "name another daily.work_dir or remove the file") from None
        if held != owner:
            other = ", ".join(f"{k} {held[k]!r} (now {owner[k]!r})" for k in owner
                              if held[k] != owner[k])
            raise ConfigError(f"{path}: this work directory belongs to another daily job: "
                              f"{other}; name another daily.work_dir to start a new one")
        return cls(path, owner, days, current)

    @property
    def last(self) -> dict[str, Any] | None:
        return self.days[-1] if self.days else None

    def todo(self, window: list[Any]) -> list[Any]:
        """The days of ``window`` (each with a ``name``) after the last finished one."""
        names = [d.name for d in window]
        if self.last is None:
            return window
        if self.last["name"] in names:
            return window[names.index(self.last["name"]) + 1:]
        done = {d["name"] for d in self.days}
        if done & set(names):  # the window ends before the last finished day
            return []
        if names and names[0] < self.last["name"]:
            raise ConfigError(f"{self.path}: the window starts at {names[0]}, before the last "
                              f"finished day {self.last['name']}, and does not reach it; "
                              "use --redo DAY to train days again")
        return window

    def redo(self, name: str) -> None:
        """Forgets day ``name`` and every day after it (and a day in progress)."""
        names = [d["name"] for d in self.days]
        if name not in names:
            raise ConfigError(f"--redo {name}: not a finished day in {self.path} (finished: "
                              f"{', '.join(names) or 'none'})")
        del self.days[names.index(name):]
        self.current = None
        self.save()

    def begin(self, entry: dict[str, Any]) -> None:
        self.current = entry
        self.save()

    def finish(self, result: dict[str, Any]) -> None:
        self.days.append(result)
        self.current = None
        self.save()

    def as_dict(self) -> dict[str, Any]:
        return {**self.owner, "days": self.days, "in_progress": self.current}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.as_dict(), indent=2))
        os.replace(tmp, self.path)  # a reader never sees half a file
