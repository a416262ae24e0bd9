"""Keeps third-party chatter (torchrec planner, fbgemm TBE setup, torch.fx notices) out of the
job's output so the progress bar, results and real warnings stay readable."""

from __future__ import annotations

import logging
import warnings

_NOISY = ("torchrec", "fbgemm_gpu", "torch.fx", "torch.distributed", "torch.export")


def quiet_third_party() -> None:
    logging.getLogger().setLevel(logging.WARNING)
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.ERROR)
    for module in (r"torchrec\..*", r"torch\..*", r"fbgemm_gpu\..*"):
        warnings.filterwarnings("ignore", category=UserWarning, module=module)
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
