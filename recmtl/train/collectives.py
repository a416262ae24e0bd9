"""Steps the ranks take together, bounded in time: they run on a gloo process group of their
own whose collectives give up after ``timeout_s`` (60 s by default), so a step some rank never
reaches (it failed, or took another path) raises an error naming the step on the ranks that
wait, instead of hanging for the default group's 30 minutes.

    with BoundedSteps("warm start from ckpt/") as steps:
        plans = steps.all_gather("agreeing on the tables", local_plan)
        steps.run("loading table 'item'", lambda group: dcp.load(state, process_group=group))
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar

import torch.distributed as dist

from recmtl.errors import CollectiveError, RecmtlError

DEFAULT_TIMEOUT_S = 60.0
T = TypeVar("T")


class BoundedSteps:
    """A context in which ``run(step, fn)`` calls ``fn(group)`` (``group``: the bounded process
    group, None outside a process group) and turns its failure into a ``CollectiveError``
    that names ``what``, the step, this rank and the time it waited.

    Entering it is collective on the default group (a new group); leaving it is local."""

    def __init__(self, what: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.what, self.timeout_s = what, timeout_s
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        self.group: dist.ProcessGroup | None = None

    def __enter__(self) -> BoundedSteps:
        if self.distributed:
            self.group = self.run("joining the process group of its steps", lambda _: dist.new_group(
                backend="gloo", timeout=timedelta(seconds=self.timeout_s)))
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self.group is not None:
            dist.destroy_process_group(self.group)
            self.group = None

    def run(self, step: str, fn: Callable[[dist.ProcessGroup | None], T]) -> T:
        start = time.monotonic()
        try:
            return fn(self.group)
        except RecmtlError:
            raise
        except Exception as e:
            waited = time.monotonic() - start
            what = (f"timed out after {self.timeout_s:g} s" if waited >= 0.9 * self.timeout_s
                    else f"failed after {waited:.1f} s (the limit is {self.timeout_s:g} s)")
            raise CollectiveError(
                f"{self.what}: {step} {what} on rank {self.rank} of {self.world} (another rank "
                f"did not take part in it: see its log): {type(e).__name__}: "
                f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from e

    def all_gather(self, step: str, value: Any) -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order."""
        if not self.distributed:
            return [value]
        out: list[Any] = [None] * self.world

        def gather(group: dist.ProcessGroup | None) -> list[Any]:
            dist.all_gather_object(out, value, group=group)
            return out
        return self.run(step, gather)
