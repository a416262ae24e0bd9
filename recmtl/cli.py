"""recmtl: multi-task ranking from Parquet to exported towers.

    recmtl <generate|train|evaluate|export|bench> CONFIG [dotted.key=value ...]
    recmtl score --bundle DIR --data PATH [--out FILE] [--backend torch|onnx|aoti] [--raw]
    recmtl bench-serving --bundle DIR --data PATH
    recmtl evaluate CONFIG [--checkpoint DIR | --bundle DIR] [--slice COLUMN ...] [--out DIR]
    recmtl compare RUN_A RUN_B [--tracking-uri URI] [--out FILE]
    recmtl prepare SPEC.yaml [--source URI] [--output DIR]
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
    "evaluate": "score the test split with a checkpoint or a bundle; write report.json",
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
        if name == "evaluate":
            p.add_argument("--bundle", help="score with this serving bundle instead of a checkpoint "
                           "(default --out: BUNDLE/../evaluate-bundle)")
            p.add_argument("--slice", action="append", default=[], metavar="COLUMN",
                           help="also report AUC per value of this column (adds to evaluate.slices)")
    p = sub.add_parser("score", help="score raw feature rows with a bundle (plain torch)")
    p.add_argument("--bundle", required=True)
    p.add_argument("--data", required=True, help="a Parquet file or directory")
    p.add_argument("--out", help="Parquet file for the scores")
    p.add_argument("--backend", default="torch", choices=["torch", "onnx", "aoti"])
    p.add_argument("--keep", action="append", default=[], help="column to copy into --out")
    p.add_argument("--raw", action="store_true", help="the rows are raw feature-store columns: "
                   "apply the transforms `recmtl prepare` fit (bundles of prepared data)")
    p = sub.add_parser("compare", help="AUC of run B minus run A per task, with a 95%% interval")
    p.add_argument("run_a", help="report.json, a directory holding one, or an MLflow run id")
    p.add_argument("run_b", help="the same for the candidate run")
    p.add_argument("--tracking-uri", help="MLflow tracking URI for run ids "
                   "(default: $MLFLOW_TRACKING_URI)")
    p.add_argument("--out", help="write compare.json here (a file, or a directory for it)")
    p.add_argument("--resamples", type=int, default=200, help="paired bootstrap resamples")
    p = sub.add_parser("prepare", help="raw feature-store export -> training Parquet + stats + config")
    p.add_argument("spec", type=Path, help="the feature schema YAML (pipelines/feature_spec.py)")
    p.add_argument("--source", help="override the spec's source")
    p.add_argument("--output", help="override the spec's output")
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

        score(args.bundle, args.data, args.out, args.backend, tuple(args.keep), raw=args.raw)
        return 0
    if args.command == "compare":
        from pipelines.compare import compare

        try:
            compare(args.run_a, args.run_b, out=args.out, tracking_uri=args.tracking_uri,
                    resamples=args.resamples)
        except FileNotFoundError as e:
            print(f"recmtl compare: {e}", file=sys.stderr)
            return 2
        return 0
    if args.command == "prepare":
        from pipelines.feature_spec import load_spec
        from pipelines.prepare import prepare as prepare_export

        overrides = {k: v for k, v in (("source", args.source), ("output", args.output)) if v}
        try:
            spec = load_spec(args.spec, overrides)
        except ConfigError as e:
            print(f"recmtl: {e}", file=sys.stderr)
            return 2
        prepare_export(spec)
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
    elif args.command == "evaluate" and args.bundle:
        from pipelines.evaluate import evaluate, with_slices

        if args.checkpoint:
            print("recmtl: evaluate takes --checkpoint or --bundle, not both", file=sys.stderr)
            return 2

        out = Path(args.out) if args.out else Path(args.bundle).resolve().parent / "evaluate-bundle"
        evaluate(with_slices(cfg, args.slice), None, out, bundle=args.bundle)
    else:
        from pipelines.train import latest_checkpoint

        checkpoint = Path(args.checkpoint) if args.checkpoint else latest_checkpoint(cfg)
        run_dir = Path(args.out) if args.out else checkpoint.parent.parent.parent
        if args.command == "evaluate":
            from pipelines.evaluate import evaluate, with_slices

            evaluate(with_slices(cfg, args.slice), checkpoint, run_dir)
        else:
            from pipelines.export import export

            export(cfg, checkpoint, run_dir if args.out else run_dir / "export")
    return 0


if __name__ == "__main__":
    sys.exit(main())
