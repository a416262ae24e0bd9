"""Ray Train's failure handling, told that bad data is not a transient fault.

Ray restarts a failed worker group up to ``FailureConfig.max_failures`` times whatever failed
it; a ``DataError`` would fail every restart on the same rows. Ray 2.60 has no public hook for
a failure policy, so the trainer wraps the one it builds, at the one place it hands it to the
controller (``_initialize_and_run_controller``); tests/train/test_data_error_in_worker.py
pins the behaviour against the installed Ray.
"""

from __future__ import annotations

from typing import Any

from ray.train.torch import TorchTrainer
from ray.train.v2._internal.execution.failure_handling import FailurePolicy
from ray.train.v2._internal.execution.failure_handling.failure_policy import FailureDecision

from recmtl.errors import DataError


def worker_data_error(error: BaseException) -> DataError | None:
    """The ``DataError`` a worker raised, if that is what failed the worker group. Ray wraps a
    worker's exception (``UserExceptionWithTraceback._base_exc``, ``RayTaskError.cause``)."""
    for failure in getattr(error, "worker_failures", {}).values():
        pending: list[BaseException | None] = [failure]
        while pending:
            e = pending.pop()
            if isinstance(e, DataError):
                return DataError(str(e))
            if e is not None:
                pending += [getattr(e, "_base_exc", None), getattr(e, "cause", None), e.__cause__]
    return None


class DataErrorsFinal(FailurePolicy):
    """Ray's own policy, except that a worker group failed by a ``DataError`` is not retried."""

    def __init__(self, inner: FailurePolicy) -> None:
        super().__init__(inner.failure_config)
        self.inner = inner

    def make_decision(self, training_failed_error: Any) -> FailureDecision:
        if worker_data_error(training_failed_error) is not None:
            return FailureDecision.RAISE
        return self.inner.make_decision(training_failed_error)


class TorchTrainerDataErrorsFinal(TorchTrainer):
    """``TorchTrainer`` whose controller gets ``DataErrorsFinal`` around its failure policy."""

    def _initialize_and_run_controller(self, **controller_init_kwargs: Any) -> Any:
        policy = controller_init_kwargs.get("failure_policy")
        if policy is None:
            raise RuntimeError("Ray Train no longer passes failure_policy to its controller: "
                               "recmtl.train.ray_policy needs updating for this Ray version")
        controller_init_kwargs["failure_policy"] = DataErrorsFinal(policy)
        return super()._initialize_and_run_controller(  # type: ignore[misc]
            **controller_init_kwargs)

