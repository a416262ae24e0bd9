"""recmtl: multi-task ranking from Parquet to exported towers.

    recmtl <generate|train|evaluate|export|bench> CONFIG [dotted.key=value ...]
    recmtl score --bundle DIR --data PATH [--out FILE] [--backend torch|onnx|aoti]
    recmtl bench-serving --bundle DIR --data PATH
    recmtl prepare-census [--src CSV.gz] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from recmtl.config import ConfigError, load_config

_CONFIG_COMMANDS = {
    "generate": "write the synthetic feature store (data.root)",
    "train": "train on Ray, then evaluate and export, all in one MLflow run",
    "evaluate": "score the test split with a checkpoint; write report.json",
    "export": "export a checkpoint as a parity-checked serving bundle",
    "bench": "training and data-path throughput on this machine (JSON under output_dir)",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recmtl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in _CONFIG_COMMANDS.items():
        p = sub.add_parser(name, help=help_)
        p.add_argument("config", type=Path)
        p.add_argument("overrides", nargs="*", help="dotted.key=value")
        if name == "bench":
            p.add_argument("--steps", type=int, default=60, help="training steps per run")
            p.add_argument("--ray-workers", type=int, default=2, help="0 skips the Ray run")
            p.add_argument("--json", help="where to write the results")
        if name in ("evaluate", "export"):
            p.add_argument("--checkpoint", help="default: the newest run of this config")
            p.add_argument("--out", help="output directory (default: beside the checkpoint)")
    p = sub.add_parser("score", help="score raw feature rows with a bundle (plain torch)")
    p.add_argument("--bundle", required=True)
    p.add_argument("--data", required=True, help="a Parquet file or directory")
    p.add_argument("--out", help="Parquet file for the scores")
    p.add_argument("--backend", default="torch", choices=["torch", "onnx", "aoti"])
    p.add_argument("--keep", action="append", default=[], help="column to copy into --out")
    p = sub.add_parser("prepare-census", help="Census-Income (KDD) CSV -> feature store + config")
    p.add_argument("--src", default="../shared/data/census-income-kdd/census-income.test.gz")
    p.add_argument("--out", default="data/census")
    p = sub.add_parser("bench-serving", help="p50/p99 latency of a bundle at batch 1, 64, 512")
    p.add_argument("--bundle", required=True)
    p.add_argument("--data", required=True, help="Parquet rows to score")
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--json", help="also write the results here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from recmtl.logs import quiet_third_party

    quiet_third_party()
    if args.command == "score":
        from pipelines.score import score

        score(args.bundle, args.data, args.out, args.backend, tuple(args.keep))
        return 0
    if args.command == "prepare-census":
        from pipelines.census import prepare

        prepare(args.src, args.out)
        return 0
    if args.command == "bench-serving":
        from pipelines.bench_serving import bench_serving

        results = bench_serving(args.bundle, args.data, requests=args.requests,
                                threads=args.threads)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
        return 0
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"recmtl: {e}", file=sys.stderr)
        return 2
    if args.command == "generate":
        from pipelines.synthetic import run

        run(cfg)
    elif args.command == "bench":
        from pipelines.bench import bench

        bench(cfg, steps=args.steps, ray_workers=args.ray_workers, out=args.json)
    elif args.command == "train":
        from pipelines.train import train

        train(cfg)
    else:
        from pipelines.train import latest_checkpoint

        checkpoint = Path(args.checkpoint) if args.checkpoint else latest_checkpoint(cfg)
        run_dir = Path(args.out) if args.out else checkpoint.parent.parent.parent
        if args.command == "evaluate":
            from pipelines.evaluate import evaluate

            evaluate(cfg, checkpoint, run_dir)
        else:
            from pipelines.export import export

            export(cfg, checkpoint, run_dir if args.out else run_dir / "export")
    return 0


if __name__ == "__main__":
    sys.exit(main())
