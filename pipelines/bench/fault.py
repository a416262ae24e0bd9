"""What a lost worker costs: the same Ray job twice, uninterrupted and with its last worker
SIGKILLed mid-epoch (``train.kill_worker_at_step``, one restart allowed); prints both wall
times, the difference and the validation AUCs of both runs.

    recmtl generate configs/smoke.yaml
    python -m pipelines.bench.fault configs/smoke.yaml --kill-at 30 --checkpoint-every 20
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from recmtl.config import derive, load_config
from recmtl.logs import quiet_third_party
from recmtl.train.launch import absolute_data_root, fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--kill-at", type=int, default=30, help="global step of the kill")
    parser.add_argument("--checkpoint-every", type=int, default=20)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()
    quiet_third_party()
    cfg = absolute_data_root(load_config(args.config, args.overrides))
    base = derive(cfg, {"train.checkpoint_every_steps": args.checkpoint_every})
    runs = {"uninterrupted": base,
            "killed": derive(base, {"train.kill_worker_at_step": args.kill_at,
                                   "train.max_failures": 1})}
    seconds, metrics = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, run_cfg in runs.items():
            t0 = time.perf_counter()
            _, metrics[name] = fit(run_cfg, Path(tmp) / name,
                                   None, None)
            seconds[name] = time.perf_counter() - t0
    lost = seconds["killed"] - seconds["uninterrupted"]
    print(f"uninterrupted {seconds['uninterrupted']:.1f} s, with a worker killed at step "
          f"{args.kill_at} {seconds['killed']:.1f} s: {lost:.1f} s lost")
    for key in sorted(k for k in metrics["uninterrupted"] if k.startswith("valid/auc_")):
        print(f"{key}: {metrics['uninterrupted'][key]:.4f} uninterrupted, "
              f"{metrics['killed'][key]:.4f} after the kill")


if __name__ == "__main__":
    main()
