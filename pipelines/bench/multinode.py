"""Two Ray nodes against one, and what losing a node costs, on this machine.

Ray's own ``ray.cluster_utils.Cluster`` starts real separate nodes here (a raylet and an
object store each). The same job, with the same total workers, runs:

1. on one node holding every worker (``train.placement: pack``);
2. on as many nodes as workers, one worker each (``train.placement: spread``);
3. again on those nodes, holding every rank at the node drill (``train.node_drill_at_step``)
   and killing the last node (its raylet and workers SIGKILLed, as a crashed host) while
   they hold; the elastic group (``train.min_workers: 1``) resumes from the last checkpoint on
   the workers left, which finish the epoch with the rows the lost ones had left.

Prints samples/s of the last epoch and wall time of each, the two-node / one-node ratio, the
time the killed node cost (run 3 minus run 2) and the gap between the kill and the first step
of the resumed run.

    recmtl generate configs/smoke.yaml
    python -m pipelines.bench.multinode configs/smoke.yaml --drill-at 90 train.epochs=2
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from pipelines.bench.harness import bench_parser, parse, print_table, run_bench, write_results
from recmtl.config import Config, derive, load_config
from recmtl.train.launch import absolute_data_root, fit

# A dead raylet is declared dead after ~2 s instead of ~15 s (Ray's default, 5 x 3 s): until
# then the elastic group counts the lost node's CPUs and waits for it (60 s, then retries).
FAST_NODE_DEATH = {"health_check_period_ms": 1000, "health_check_failure_threshold": 2}


def start_cluster(cpus_per_node: list[int]) -> tuple[Any, list[Any]]:
    """A head node and one more node per further entry, with that many CPUs each; every node
    also has a custom resource ``node_<i>``. Returns the cluster and its nodes, head first."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": cpus_per_node[0], "resources": {"node_0": 1}, "include_dashboard": False,
        "_system_config": FAST_NODE_DEATH})
    nodes = [cluster.head_node] + [cluster.add_node(num_cpus=n, resources={f"node_{i}": 1})
                                   for i, n in enumerate(cpus_per_node[1:], start=1)]
    cluster.wait_for_nodes()
    return cluster, nodes


def kill_node_at_drill(cluster: Any, node: Any, marker: Path, ranks: int,
                       killed: list[float], timeout_s: float = 600) -> None:
    """Kills ``node`` (no graceful shutdown) once all ``ranks`` hold at the node drill, i.e.
    have written their ``rank-*`` files under ``marker``; appends the time of the kill."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if len(list(marker.glob("rank-*"))) == ranks:
            killed.append(time.time())
            cluster.remove_node(node, allow_graceful=False)
            return
        time.sleep(0.1)


def timed_fit(cfg: Config, run_dir: Path) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    _, metrics = fit(cfg, run_dir, None, None)
    return time.perf_counter() - t0, metrics


def resumed_at(run_dir: Path) -> float | None:
    """Wall clock of the first step event after the resume (rank 0's progress events)."""
    seen_resume = False
    for line in (run_dir / "progress.jsonl").read_text().splitlines():
        event = json.loads(line)
        seen_resume = seen_resume or event.get("event") == "resumed"
        if seen_resume and event.get("event") == "epoch_start":
            return float(event["t"])
    return None


def bench_multinode(cfg: Config, drill_at: int, checkpoint_every: int) -> dict[str, Any]:
    """The three runs in order (each needs its own cluster, so they cannot take turns)."""
    import ray

    cfg = absolute_data_root(cfg)
    workers = cfg.train.num_workers
    cpus = int(cfg.train.cpus_per_worker)
    base = derive(cfg, {"train.checkpoint_every_steps": checkpoint_every})
    seconds, metrics = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        cluster, _ = start_cluster([workers * cpus])
        try:
            one = derive(base, {"train.ray_address": cluster.address, "train.placement": "pack"})
            seconds["one"], metrics["one"] = timed_fit(one, Path(tmp) / "one")
        finally:
            ray.shutdown()
            cluster.shutdown()
        cluster, nodes = start_cluster([cpus] * workers)
        try:
            spread = derive(base, {"train.ray_address": cluster.address,
                                  "train.placement": "spread", "train.min_workers": 1,
                                  "train.max_failures": 1})
            seconds["two"], metrics["two"] = timed_fit(spread, Path(tmp) / "two")
            drill_dir = Path(tmp) / "killed"
            killed: list[float] = []
            killer = threading.Thread(target=kill_node_at_drill, daemon=True, args=(
                cluster, nodes[-1], drill_dir / f"node-drill-step-{drill_at}", workers, killed))
            killer.start()
            seconds["killed"], metrics["killed"] = timed_fit(
                derive(spread, {"train.node_drill_at_step": drill_at}), drill_dir)
            resume = resumed_at(drill_dir)
        finally:
            ray.shutdown()
            cluster.shutdown()
    if not killed:
        raise SystemExit(f"the node drill never held every rank (is step {drill_at} "
                         "inside the run?): no node was killed")
    rate = {k: m["train/epoch_samples_per_s"] for k, m in metrics.items()}
    spread_over = len(set(metrics["two"]["worker_nodes"]))
    nodes_of = {"one": 1, "two": spread_over, "killed": spread_over}
    gap = resume - killed[0] if resume else None
    print_table([{"run": name, "nodes at start": nodes_of[name], "samples/s (last epoch)": rate[name],
                  "x one node": rate[name] / rate["one"] if name != "one" else None,
                  "wall s": seconds[name]} for name in metrics],
                {"samples/s (last epoch)": ",.0f", "x one node": ".2f", "wall s": ".1f"})
    k = metrics["killed"]
    print(f"node killed at step {drill_at}: {seconds['killed'] - seconds['two']:.1f} s lost; kill "
          f"-> resumed epoch running {'n/a' if gap is None else f'{gap:.1f} s'}; finished on "
          f"{k['world']} worker(s), rows before the resume {k['rows_before_resume']:,} + after "
          f"{k['rows_trained']:,} = {k['rows_in_split']:,}")
    return {"workers": workers, "drill_at": drill_at, "samples_per_s": rate, "wall_s": seconds,
            "two_over_one": rate["two"] / rate["one"], "lost_s": seconds["killed"] - seconds["two"],
            "kill_to_resumed_s": gap, "killed_run": {key: k[key] for key in (
                "world", "rows_before_resume", "rows_trained", "rows_in_split")}}


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("multinode", __doc__, config="required")
    parser.add_argument("--drill-at", type=int, default=90,
                        help="global step at which a node is killed (after a checkpoint)")
    parser.add_argument("--checkpoint-every", type=int, default=20)
    args = parse(parser, argv)
    return run_bench(lambda: write_results(args, bench_multinode(
        load_config(args.config, args.overrides), args.drill_at, args.checkpoint_every)))


if __name__ == "__main__":
    sys.exit(main())
