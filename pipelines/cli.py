"""recmtl: multi-task ranking from Parquet to exported towers.

    recmtl <generate|train|evaluate|export> CONFIG [dotted.key=value ...]
    recmtl evaluate CONFIG [--checkpoint DIR | --bundle DIR] [--slice COLUMN ...] [--out DIR]
    recmtl score --bundle DIR --data PATH [--out FILE] [--backend torch|onnx|aoti] [--raw]
    recmtl compare RUN_A RUN_B [--tracking-uri URI] [--out FILE]
    recmtl prepare SPEC.yaml [--source URI] [--output DIR] [--previous DIR]
    recmtl prepare-census [--src CSV.gz] [--out DIR]
    recmtl daily CONFIG [dotted.key=value ...] [--redo DAY]

Every command takes --verbose (third-party warnings and logs as they come) and --debug (a
traceback with any error). An expected failure (a bad config, bad data, a missing path, an
unreachable MLflow server) prints one line, ``recmtl: error: ...``, and exits with code 2.
Benchmarks are scripts: ``python -m pipelines.bench.<name>`` (see README, "Benchmark").
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from recmtl.config import Config, load_config
from recmtl.errors import RecmtlError
from recmtl.logs import quiet_third_party

_CONFIG_COMMANDS = {
    "generate": "write the synthetic feature store (data.root)",
    "train": "train on Ray, then evaluate and export, all in one MLflow run",
    "evaluate": "score the test split with a checkpoint or a bundle; write report.json",
    "export": "export a checkpoint as a parity-checked serving bundle",
}


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the traceback of an error")
    common.add_argument("--verbose", action="store_true",
                        help="keep third-party warnings and logs (hidden by default)")
    parser = argparse.ArgumentParser(prog="recmtl", description=__doc__, parents=[common],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in _CONFIG_COMMANDS.items():
        p = sub.add_parser(name, help=help_, parents=[common])
        p.add_argument("config", type=Path)
        p.add_argument("overrides", nargs="*", help="dotted.key=value")
        if name == "train":
            p.add_argument("--warm-start", metavar="RUN", help="start from this model: a "
                           "checkpoint, a run directory or an MLflow run id (tables may have "
                           "grown, workers may differ)")
        if name in ("evaluate", "export"):
            p.add_argument("--checkpoint", help="default: the newest run of this config")
            p.add_argument("--out", help="output directory (default: beside the checkpoint)")
        if name == "evaluate":
            p.add_argument("--bundle", help="score with this serving bundle instead of a checkpoint "
                           "(default --out: BUNDLE/../evaluate-bundle)")
            p.add_argument("--slice", action="append", default=[], metavar="COLUMN",
                           help="also report AUC per value of this column (adds to evaluate.slices)")
    p = sub.add_parser("score", help="score raw feature rows with a bundle (plain torch)",
                       parents=[common])
    p.add_argument("--bundle", required=True)
    p.add_argument("--data", required=True, help="a Parquet file or directory")
    p.add_argument("--out", help="Parquet file for the scores")
    p.add_argument("--backend", default="torch", choices=["torch", "onnx", "aoti"])
    p.add_argument("--keep", action="append", default=[], help="column to copy into --out")
    p.add_argument("--raw", action="store_true", help="the rows are raw feature-store columns: "
                   "apply the transforms `recmtl prepare` fit (bundles of prepared data)")
    p = sub.add_parser("compare", help="AUC of run B minus run A per task, with a 95%% interval",
                       parents=[common])
    p.add_argument("run_a", help="report.json, a directory holding one, or an MLflow run id")
    p.add_argument("run_b", help="the same for the candidate run")
    p.add_argument("--tracking-uri", help="MLflow tracking URI for run ids "
                   "(default: $MLFLOW_TRACKING_URI)")
    p.add_argument("--out", help="write compare.json and compare.html here (a .json file, or a "
                   "directory for both)")
    p.add_argument("--resamples", type=int, default=200, help="paired bootstrap resamples")
    p = sub.add_parser("prepare", help="raw feature-store export -> training Parquet + stats + config",
                       parents=[common])
    p.add_argument("spec", type=Path, help="the feature schema YAML (pipelines/feature_store/spec.py)")
    p.add_argument("--source", help="override the spec's source")
    p.add_argument("--output", help="override the spec's output")
    p.add_argument("--previous", help="start from this earlier preparation (its vocabularies, "
                   "ids and transforms; override the spec's previous)")
    p = sub.add_parser("daily", help="continue one model over a window of days: prepare, "
                       "warm-start, test on the next day, register, promote", parents=[common])
    p.add_argument("config", type=Path)
    p.add_argument("overrides", nargs="*", help="dotted.key=value")
    p.add_argument("--redo", metavar="DAY", help="train this finished day again, and every "
                   "day after it (by default a run continues after the last finished day)")
    p = sub.add_parser("prepare-census", help="Census-Income (KDD) CSV -> feature store + config",
                       parents=[common])
    p.add_argument("--src", default="../shared/data/census-income-kdd/census-income.test.gz")
    p.add_argument("--out", default="data/census")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parse(_parser(), argv)
    if not args.verbose:
        quiet_third_party()
    return run_guarded(lambda: _dispatch(args), debug=args.debug)


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The arguments, with ``key=value`` overrides taken wherever they stand: after an option
    (``train CONFIG --warm-start RUN a.b=1``) as well as before it."""
    args, extra = parser.parse_known_args(argv)
    unknown = [a for a in extra if a.startswith("-") or "=" not in a]
    if unknown or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def run_guarded(job: Callable[[], object], debug: bool = False, prog: str = "recmtl") -> int:
    """Runs ``job``; an expected failure becomes one ``PROG: error: ...`` line and exit code 2
    (with ``debug``, the traceback too). Anything else is a bug and raises as it is."""
    try:
        job()
    except (RecmtlError, FileNotFoundError) as e:
        if debug:
            raise
        print(f"{prog}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return 0


def _one_line(e: BaseException) -> str:
    if isinstance(e, FileNotFoundError) and e.filename:
        return f"{e.filename}: no such file or directory"
    return " ".join(str(e).split()) or type(e).__name__


def _dispatch(args: argparse.Namespace) -> None:
    if args.command == "score":
        from pipelines.jobs.score import score

        score(args.bundle, args.data, args.out, args.backend, tuple(args.keep), raw=args.raw)
    elif args.command == "compare":
        from pipelines.jobs.compare import compare

        compare(args.run_a, args.run_b, out=args.out, tracking_uri=args.tracking_uri,
                resamples=args.resamples)
    elif args.command == "prepare":
        from pipelines.feature_store.prepare import prepare
        from pipelines.feature_store.spec import load_spec

        overrides = {k: v for k, v in (("source", args.source), ("output", args.output),
                                       ("previous", args.previous)) if v}
        prepare(load_spec(args.spec, overrides))
    elif args.command == "daily":
        from pipelines.jobs.daily import daily

        daily(args.config, args.overrides, quiet=not args.verbose, redo=args.redo)
    elif args.command == "prepare-census":
        from pipelines.feature_store.census import prepare as prepare_census

        prepare_census(args.src, args.out)
    else:
        _config_command(args, load_config(args.config, args.overrides))


def _config_command(args: argparse.Namespace, cfg: Config) -> None:
    if args.command == "generate":
        from pipelines.synthetic.store import run

        run(cfg)
    elif args.command == "train":
        from pipelines.jobs.train import train

        train(cfg, quiet=not args.verbose, warm_start=args.warm_start)
    elif args.command == "evaluate" and args.bundle:
        from pipelines.jobs.evaluate import evaluate, with_slices

        if args.checkpoint:
            raise RecmtlError("evaluate takes --checkpoint or --bundle, not both")
        out = Path(args.out) if args.out else Path(args.bundle).resolve().parent / "evaluate-bundle"
        evaluate(with_slices(cfg, args.slice), None, out, bundle=args.bundle)
    else:
        with tempfile.TemporaryDirectory(prefix="recmtl-checkpoint-") as tmp:
            _checkpoint_command(args, cfg, Path(tmp))


def _checkpoint_command(args: argparse.Namespace, cfg: Config, scratch: Path) -> None:
    """``evaluate`` / ``export`` from a checkpoint: a directory, the newest run's, or a URI
    (``train.storage_path`` on object storage: copied under ``scratch`` first; needs --out)."""
    from pipelines.jobs.train import latest_checkpoint

    if args.checkpoint and "://" in args.checkpoint:
        from recmtl.train.launch import local_checkpoint

        if not args.out:
            raise RecmtlError(f"--checkpoint {args.checkpoint}: a checkpoint URI needs --out DIR")
        checkpoint = local_checkpoint(args.checkpoint, scratch)
    else:
        checkpoint = Path(args.checkpoint) if args.checkpoint else latest_checkpoint(cfg)
    if not checkpoint.exists():
        raise RecmtlError(f"--checkpoint {checkpoint}: no such directory")
    run_dir = Path(args.out) if args.out else checkpoint.parent.parent.parent
    if args.command == "evaluate":
        from pipelines.jobs.evaluate import evaluate, with_slices

        evaluate(with_slices(cfg, args.slice), checkpoint, run_dir)
    else:
        from pipelines.jobs.export import export

        export(cfg, checkpoint, run_dir if args.out else run_dir / "export")

if __name__ == "__main__":
    sys.exit(main())
