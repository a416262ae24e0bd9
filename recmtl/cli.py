"""`recmtl <subcommand> CONFIG [dotted.key=value ...]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recmtl.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recmtl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in [
        ("generate", "write the synthetic feature store (data.root)"),
        ("train", "train on Ray, then evaluate and export, all in one MLflow run"),
        ("evaluate", "score the test split with a checkpoint; write report.json"),
        ("export", "export a checkpoint as a parity-checked serving bundle"),
    ]:
        p = sub.add_parser(name, help=help_)
        p.add_argument("config", type=Path)
        p.add_argument("overrides", nargs="*", help="dotted.key=value")
        if name in ("evaluate", "export"):
            p.add_argument("--checkpoint", help="default: the newest run of this config")
            p.add_argument("--out", help="output directory (default: beside the checkpoint)")
    args = parser.parse_args(argv)
    from recmtl.logs import quiet_third_party

    quiet_third_party()
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"recmtl: {e}", file=sys.stderr)
        return 2

    if args.command == "generate":
        from pipelines.synthetic import run

        run(cfg)
    elif args.command == "train":
        from pipelines.train import train

        train(cfg)
    else:
        from pipelines.train import latest_checkpoint

        checkpoint = Path(args.checkpoint) if args.checkpoint else latest_checkpoint(cfg)
        run_dir = checkpoint.parent.parent.parent if not args.out else Path(args.out)
        if args.command == "evaluate":
            from pipelines.evaluate import evaluate

            evaluate(cfg, checkpoint, args.out or run_dir)
        else:
            from pipelines.export import export

            export(cfg, checkpoint, args.out or run_dir / "export")
    return 0


if __name__ == "__main__":
    sys.exit(main())
