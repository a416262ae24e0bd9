"""Every command the README, docs/**/*.md and the config comments show runs, end to end.

The commands are collected from the files at test time (``tests/documented.py``) and each must
match exactly one entry of ``TABLE``: a documented command without an entry fails (add one),
and so does an entry that matches no documented command (remove or update it).

Each entry says how its command is checked:

- ``run``: the documented text, with the entry's ``subs`` replaced (placeholders, ``[optional]``
  parts) and its ``extra`` arguments appended (small-data overrides: the last value of a key
  wins), runs through the real CLI in a subprocess. The working directory is a scratch
  directory with ``configs/`` linked in, so relative paths (``data/demo``, ``runs/``) resolve
  as they would in a checkout and nothing lands in the repository. ``after`` names documented
  commands that must have run first (the store it reads, the run whose bundle it uses); each
  runs once per session and its result is shared.
- ``heavy``: the same, marked ``heavy`` (``make test-heavy``): long by nature. ``make test``
  still checks that each parses (``tests/test_documented_parse.py``).
- ``help``: a usage line: ``--help`` of the (sub)command succeeds and names every ``--flag``
  the line shows.
- ``covered``: not run from the suite (``make demo``, ``make test``...), with the reason.

``census=True`` runs only where the Census-Income CSV is present (``../shared`` beside the
checkout, as in CI); it is skipped otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from tests.documented import ROOT, documented_commands

CENSUS_CSV = ROOT.parent / "shared" / "data" / "census-income-kdd" / "census-income.test.gz"

# The synthetic store at a few thousand rows: generation takes seconds.
SMALL_DATA = ("synthetic.train_rows=4000", "synthetic.valid_rows=1000", "synthetic.test_rows=1000",
              "synthetic.rows_per_file=2000", "synthetic.row_group_size=1000")
# A few steps of training; the report, export and MLflow model as in a full run.
SMALL_TRAIN = ("data.batch_size=512", "train.max_steps_per_epoch=3", "export.parity_rows=512")
CENSUS_TRAIN = ("train.epochs=1", *SMALL_TRAIN)

Kind = Literal["run", "heavy", "help", "covered"]


@dataclass(frozen=True)
class Entry:
    """How the documented commands matching ``pattern`` (a regex, whole command) are checked.

    ``subs``: (documented text, replacement) pairs, each of which must occur in the command;
    a replacement may name ``{bundle}`` (the demo run's export), ``{run}`` (its run directory),
    ``{run_id}`` (its MLflow run id) or ``{out}`` (a fresh directory for this command).
    """

    pattern: str
    kind: Kind
    why: str = ""
    subs: tuple[tuple[str, str], ...] = ()
    extra: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    census: bool = False


DEMO_GEN = "recmtl generate configs/demo.yaml"
DEMO_TRAIN = "recmtl train configs/demo.yaml"
STANDARD_GEN = "recmtl generate configs/bench/standard.yaml"
SMOKE_GEN = "recmtl generate configs/smoke.yaml"
CENSUS_PREP = "recmtl prepare-census"
DAILY_GEN = "recmtl generate configs/daily/daily.yaml"
MANAGED_GEN = "recmtl generate configs/managed.yaml"
DEMO16M_GEN = "recmtl generate configs/demo.yaml data.root=data/demo16m synthetic.train_rows=16000000"
DEMO8M_GEN = "recmtl generate configs/demo.yaml data.root=data/demo8m synthetic.train_rows=8000000"
SEQ300K_GEN = "recmtl generate configs/sequences/din.yaml synthetic.train_rows=300000"
SHIFTS_GEN = "recmtl generate configs/daily/shifts.yaml"
LONGTAIL_GEN = "recmtl generate configs/longtail/longtail.yaml"
LONGTAIL_PREP = "recmtl prepare configs/longtail/prepare.yml"
CALIBRATION_GEN = ("recmtl generate configs/demo.yaml data.root=data/calibration "
                   "synthetic.train_rows=300000")


def _exact(command: str) -> str:
    return re.escape(command)


TABLE: list[Entry] = [
    # make: the README's own commands, run elsewhere.
    Entry(r"make (demo|test)", "covered",
          "`make demo` is generate + train on configs/demo.yaml (both run here on small data, "
          "below); `make test` is this suite. CI runs `make lint` and `make test` (.ci/run)."),
    Entry(r"make (setup|lint|test-heavy)", "covered",
          "setup: a prerequisite of every make target; lint: .ci/run; test-heavy: the `heavy` "
          "entries of this table."),
    # The demo's pipeline on a small store: one real training, shared by what follows.
    Entry(_exact(DEMO_GEN), "run", extra=SMALL_DATA),
    Entry(_exact(DEMO_TRAIN), "run", extra=SMALL_TRAIN, after=(DEMO_GEN,)),
    Entry(_exact("recmtl evaluate CONFIG [--checkpoint DIR | --bundle DIR] [--slice COLUMN ...] "
                 "[--out DIR]"), "run",
          subs=(("CONFIG", "configs/demo.yaml"),
                ("[--checkpoint DIR | --bundle DIR]", "--bundle {bundle}"),
                ("[--slice COLUMN ...]", "--slice user_segment"), ("[--out DIR]", "--out {out}")),
          after=(DEMO_TRAIN,)),
    Entry(_exact("recmtl compare RUN_A RUN_B [--tracking-uri URI] [--out DIR|FILE.json]"), "run",
          "the run against itself: A as its directory, B as its MLflow run id",
          subs=(("RUN_A", "{run}"), ("RUN_B", "{run_id}"),
                ("[--tracking-uri URI]", "--tracking-uri sqlite:///runs/mlflow.db"),
                ("[--out DIR|FILE.json]", "--out compare.json")),
          after=(DEMO_TRAIN,)),
    Entry(_exact("recmtl evaluate configs/demo.yaml"), "run", "the newest run's checkpoint",
          after=(DEMO_TRAIN,)),
    Entry(_exact("recmtl score --bundle runs/bundle --data data/demo/test"), "run",
          subs=(("runs/bundle", "{bundle}"),), after=(DEMO_TRAIN,)),
    Entry(_exact("recmtl score --bundle runs/demo-.../export --data data/demo/test "
                 "--out scores.parquet --keep impression_id [--backend torch|onnx|aoti]"), "run",
          subs=(("runs/demo-.../export", "{bundle}"), ("[--backend torch|onnx|aoti]", "--backend onnx")),
          after=(DEMO_TRAIN,)),
    Entry(_exact("python -m pipelines.bench.serving --bundle runs/bundle --data data/demo/test"),
          "run", subs=(("runs/bundle", "{bundle}"),), extra=("--requests", "3"),
          after=(DEMO_TRAIN,)),
    Entry(_exact("python -m pipelines.bench.serving --bundle runs/demo-.../export "
                 "--data data/demo/test"), "run",
          subs=(("runs/demo-.../export", "{bundle}"),), extra=("--requests", "3"),
          after=(DEMO_TRAIN,)),
    Entry(_exact("recmtl export configs/demo.yaml export.aot_inductor=true --out runs/bundle"),
          "heavy", "AOTInductor compiles for ~30 s more", subs=(("runs/bundle", "{out}"),),
          extra=("export.parity_rows=512",), after=(DEMO_TRAIN,)),
    Entry(_exact("recmtl evaluate CONFIG --checkpoint s3://bucket/checkpoints/<run>/epoch-0000 "
                 "--out DIR"), "covered",
          "needs an S3 endpoint: tests/test_object_store.py (heavy) runs it against a local one"),
    Entry(_exact("python -m pipelines.bench.object_store"), "heavy",
          "starts moto's S3 server; a small store, one read each",
          subs=(("object_store", "object_store configs/smoke.yaml synthetic.train_rows=20000 "
                 "--repeats 1"),)),
    Entry(_exact("python -m pipelines.bench.object_store [CONFIG] [dotted.key=value ...] "
                 "[--repeats 5]"), "help"),
    Entry(_exact("python -m pipelines.bench.eval --rows 10000000"), "run",
          subs=(("--rows 10000000", "--rows 20000"),), extra=("--bootstrap", "20")),
    # More synthetic stores: generation is cheap at a few thousand rows.
    Entry(_exact(DEMO16M_GEN), "run", extra=SMALL_DATA),
    Entry(_exact(DEMO8M_GEN), "run", extra=SMALL_DATA),
    Entry(_exact(SEQ300K_GEN), "run", extra=SMALL_DATA),
    Entry(_exact("recmtl generate configs/quality/funnel_24m.yaml"), "run", extra=SMALL_DATA),
    Entry(_exact(STANDARD_GEN), "run",
          # bench.compile takes no overrides: 8 batches of 4096 for `--steps 3` after 5 warm-up
          extra=(*SMALL_DATA, "synthetic.train_rows=40000", "synthetic.rows_per_file=20000")),
    Entry(_exact(SMOKE_GEN), "run"),
    Entry(_exact(DAILY_GEN), "run",
          extra=("synthetic.rows_per_day=5000", "synthetic.num_users=2000",
                 "synthetic.num_items=2000", "synthetic.row_group_size=2000")),
    Entry(_exact("recmtl prepare configs/daily/prepare.yml"), "run", after=(DAILY_GEN,)),
    Entry(_exact(SHIFTS_GEN), "run",
          extra=("synthetic.rows_per_day=5000", "synthetic.num_users=2000",
                 "synthetic.num_items=2000", "synthetic.row_group_size=2000",
                 "synthetic.shifts.new_items_per_day=200")),
    Entry(_exact("recmtl prepare configs/daily/shifts_prepare.yml"), "run", after=(SHIFTS_GEN,)),
    Entry(_exact(MANAGED_GEN), "run", extra=SMALL_DATA),
    Entry(_exact(LONGTAIL_GEN), "run", extra=SMALL_DATA),
    Entry(_exact(LONGTAIL_PREP), "run", after=(LONGTAIL_GEN,)),
    Entry(_exact(CALIBRATION_GEN), "run", extra=SMALL_DATA),
    Entry(r"recmtl generate configs/sequences/(din|bst)\.yaml", "run", extra=SMALL_DATA),
    Entry(r"recmtl generate configs/multitask/(low|high)_correlation\.yaml", "run", extra=SMALL_DATA),
    # Other trainings: one Ray job each (~40 s), so heavy, on the small stores above.
    Entry(_exact("recmtl train configs/smoke.yaml"), "heavy", "as documented: the store is small",
          after=(SMOKE_GEN,)),
    Entry(r"recmtl train configs/models/(shared_bottom|home)\.yaml", "heavy", extra=SMALL_TRAIN,
          after=(DEMO_GEN,)),
    Entry(_exact("recmtl daily configs/daily/daily.yaml"), "heavy",
          "six days of small-store preparation, training and registration",
          extra=("daily.days=2", *SMALL_TRAIN), after=(DAILY_GEN,)),
    Entry(_exact("recmtl train data/longtail/prepared/longtail.yaml"), "heavy", extra=SMALL_TRAIN,
          after=(LONGTAIL_PREP,)),
    Entry(_exact("recmtl train configs/managed.yaml"), "heavy", extra=SMALL_TRAIN,
          after=(MANAGED_GEN,)),
    Entry(_exact("recmtl train configs/sequences/din.yaml"), "heavy",
          "one Ray training, evaluation and export with jagged history inputs", extra=SMALL_TRAIN,
          after=("recmtl generate configs/sequences/din.yaml",)),
    Entry(_exact("python -m pipelines.bench.sequence_cost configs/sequences/din.yaml "
                 "synthetic.train_rows=20000 --steps 30 --encoders din,bst"), "heavy",
          "seven single-process trainings on three generated stores",
          extra=("synthetic.valid_rows=2000", "synthetic.test_rows=2000", "--steps", "3",
                 "--lengths", "5,10")),
    Entry(_exact("python -m pipelines.bench.sequence_cost configs/sequences/din.yaml "
                 "synthetic.train_rows=20000 model.expert_layers=[256,128] --steps 30 "
                 "--encoders din,bst"), "heavy",
          "seven single-process trainings on three generated stores, experts [256, 128]",
          extra=("synthetic.valid_rows=2000", "synthetic.test_rows=2000", "--steps", "3",
                 "--lengths", "5,10")),
    Entry(_exact("python -m pipelines.bench.sequences configs/sequences/din.yaml "
                 "synthetic.train_rows=300000"), "heavy",
          "five Ray trainings on the (small) store generated with the same override",
          extra=("synthetic.train_rows=4000", *SMALL_TRAIN), after=(SEQ300K_GEN,)),
    Entry(_exact("python -m pipelines.bench.sequences configs/sequences/din.yaml "
                 "--archs mmoe,dtrn,infnet"), "heavy",
          "four Ray trainings: pooled, DIN under mmoe, dtrn, infnet", extra=SMALL_TRAIN,
          after=("recmtl generate configs/sequences/din.yaml",)),
    Entry(r"recmtl train configs/multitask/(low|high)_correlation\.yaml", "heavy", extra=SMALL_TRAIN,
          after=("recmtl generate configs/multitask/high_correlation.yaml",
                 "recmtl generate configs/multitask/low_correlation.yaml")),
    Entry(_exact("recmtl train configs/sequences/bst.yaml"), "heavy",
          "one Ray training, evaluation and export with jagged history inputs", extra=SMALL_TRAIN,
          after=("recmtl generate configs/sequences/bst.yaml",)),
    Entry(r"recmtl generate configs/sequences/(dtrn|infnet)\.yaml", "heavy",
          "din.yaml's store again (same synthetic section)", extra=SMALL_DATA),
    Entry(_exact("recmtl train configs/sequences/dtrn.yaml"), "heavy",
          "one Ray training, evaluation and export with jagged history inputs", extra=SMALL_TRAIN,
          after=("recmtl generate configs/sequences/dtrn.yaml",)),
    Entry(_exact("recmtl train configs/sequences/infnet.yaml"), "heavy",
          "one Ray training, evaluation and export with jagged history inputs", extra=SMALL_TRAIN,
          after=("recmtl generate configs/sequences/infnet.yaml",)),
    Entry(_exact("recmtl train configs/demo.yaml evaluate.calibration=isotonic"), "heavy",
          extra=SMALL_TRAIN, after=(DEMO_GEN,)),
    Entry(_exact("python -m pipelines.bench.calibration configs/demo.yaml data.root=data/calibration"),
          "heavy", "one Ray training, then every calibration method from its logits",
          extra=SMALL_TRAIN, after=(CALIBRATION_GEN,)),
    Entry(_exact("python -m pipelines.bench.calibration configs/demo.yaml data.root=data/calibration "
                 "train.epochs=2"), "heavy", "two epochs of one Ray training, then every method",
          extra=SMALL_TRAIN, after=(CALIBRATION_GEN,)),
    Entry(_exact("python -m pipelines.bench.calibration configs/smoke.yaml"), "heavy",
          "one Ray training on the smoke store, then every method", after=(SMOKE_GEN,)),
    Entry(_exact("python -m pipelines.bench.calibration configs/demo.yaml"), "heavy",
          "one Ray training on the small demo store, then every method", extra=SMALL_TRAIN,
          after=(DEMO_GEN,)),
    Entry(_exact("python -m pipelines.bench.calibration data/longtail/prepared/longtail.yaml"),
          "heavy", "one Ray training on the small long-tailed store, then every method",
          extra=SMALL_TRAIN, after=(LONGTAIL_PREP,)),
    Entry(_exact("python -m pipelines.bench.managed configs/daily/daily.yaml"), "heavy",
          "three Ray trainings (vocabulary, hash, managed) on the small daily store",
          extra=SMALL_TRAIN, after=(DAILY_GEN,)),
    Entry(_exact("python -m pipelines.bench.row_decay configs/demo.yaml"), "heavy",
          "five Ray trainings (no decay, two modes at two rates)", extra=SMALL_TRAIN,
          after=(DEMO_GEN,)),
    Entry(_exact("python -m pipelines.bench.row_decay data/longtail/prepared/longtail.yaml "
                 "--tables user_id,item_id --decay 0.1"), "heavy",
          "three Ray trainings on the small long-tailed store", extra=SMALL_TRAIN,
          after=(LONGTAIL_PREP,)),
    Entry(r"python -m pipelines\.bench\.daily configs/daily/daily\.yaml( .+)?", "heavy",
          "the daily job (and its variants) and a retraining per day on the small daily store",
          extra=("daily.days=2", *SMALL_TRAIN), after=(DAILY_GEN,)),
    Entry(r"python -m pipelines\.bench\.daily configs/daily/shifts\.yaml( .+)?", "heavy",
          "the same on the small warehouse-shaped store",
          extra=("daily.days=2", *SMALL_TRAIN), after=(SHIFTS_GEN,)),
    Entry(r"recmtl daily configs/daily/shifts\.yaml( .+)?", "heavy",
          "the daily job alone on the small warehouse-shaped store (tests/test_daily.py runs "
          "the job end to end in the suite)",
          extra=("daily.days=2", *SMALL_TRAIN), after=(SHIFTS_GEN,)),
    Entry(_exact(f"{DAILY_GEN} synthetic.rows_per_day=200000 synthetic.days=6"), "run",
          extra=("synthetic.rows_per_day=5000", "synthetic.num_users=2000",
                 "synthetic.num_items=2000", "synthetic.row_group_size=2000")),
    Entry(_exact("recmtl train configs/quality/funnel_24m.yaml"), "heavy", extra=SMALL_TRAIN,
          after=("recmtl generate configs/quality/funnel_24m.yaml",)),
    Entry(r"recmtl train configs/demo\.yaml train\.epochs=2( data\.batch_size=8192)?", "heavy",
          "the batch size is overridden to fit the small store", extra=SMALL_TRAIN,
          after=(DEMO_GEN,)),
    Entry(r"recmtl train configs/bench/standard\.yaml( train\.bf16=true)? "
          r"evaluate\.save_predictions=true seed=S", "heavy",
          subs=(("seed=S", "seed=0"),), extra=SMALL_TRAIN, after=(STANDARD_GEN,)),
    Entry(_exact("python -m pipelines.bench.quality configs/demo.yaml --suite synthetic"), "heavy",
          "every variant of the suite trains", extra=SMALL_TRAIN, after=(DEMO_GEN,)),
    Entry(_exact("python -m pipelines.bench.quality configs/demo.yaml --suite synthetic --only home"),
          "heavy", extra=SMALL_TRAIN, after=(DEMO_GEN,)),
    Entry(_exact("python -m pipelines.bench.quality configs/demo.yaml --suite synthetic --only home "
                 "data.root=data/demo16m synthetic.train_rows=16000000"), "heavy",
          extra=SMALL_TRAIN, after=(DEMO16M_GEN,)),
    Entry(_exact("python -m pipelines.bench.quality configs/demo.yaml --suite synthetic --only home "
                 "data.root=data/demo8m synthetic.train_rows=8000000"), "heavy",
          extra=SMALL_TRAIN, after=(DEMO8M_GEN,)),
    Entry(_exact("recmtl train configs/quality/funnel_24m.yaml data.root=data/demo16m "
                 "synthetic.train_rows=16000000"), "heavy", extra=SMALL_TRAIN,
          after=(DEMO16M_GEN,)),
    Entry(_exact("python -m pipelines.bench.quality configs/demo.yaml --suite synthetic --only "
                 "mmoe_numeric_ple evaluate.calibration=temperature"), "heavy",
          extra=SMALL_TRAIN, after=(DEMO_GEN,)),
    Entry(_exact("python -m pipelines.bench.architectures --archs mmoe,sparse_moe,"
                 "sparse_moe_sample,multitab,dtrn,infnet,mmoe_rmtl,single_task --rows 200000"),
          "heavy",
          "generates its stores and trains every (store, architecture) in-process",
          extra=("--rows", "3000", "--datasets", "funnel,multitask-low", "--work", "bench-stores")),
    Entry(r"python -m pipelines\.bench\.training configs/bench/standard\.yaml"
          r"( train\.pipeline=sparse_dist)?", "heavy",
          "1 and 2 processes, the baseline and a Ray job",
          extra=("--steps", "3", "data.batch_size=1024"), after=(STANDARD_GEN,)),
    Entry(_exact("python -m pipelines.bench.training configs/demo.yaml --steps 40"), "heavy",
          "1 and 2 processes, the baseline and a Ray job on the (small) demo store",
          extra=("--steps", "3", "data.batch_size=1024"), after=(DEMO_GEN,)),
    Entry(_exact("python -m pipelines.bench.compile configs/bench/standard.yaml"), "heavy",
          "compiles the dense part (~12 s) and runs both", extra=("--steps", "3"),
          after=(STANDARD_GEN,)),
    Entry(_exact("python -m pipelines.bench.fault CONFIG --kill-at 30 --checkpoint-every 20"),
          "heavy", "two Ray jobs on the smoke store", subs=(("CONFIG", "configs/smoke.yaml"),),
          after=(SMOKE_GEN,)),
    Entry(_exact("python -m pipelines.bench.fault configs/smoke.yaml --kill-at 30 "
                 "--checkpoint-every 20"), "heavy", "two Ray jobs on the smoke store",
          after=(SMOKE_GEN,)),
    Entry(_exact("python -m pipelines.bench.multinode configs/smoke.yaml --drill-at 90 "
                 "train.epochs=2"), "heavy", "three Ray jobs on two Ray clusters of real nodes",
          after=(SMOKE_GEN,)),
    Entry(_exact("python -m pipelines.bench.multinode configs/demo.yaml --drill-at 250 "
                 "--checkpoint-every 100"), "heavy",
          "three Ray jobs on the (small) demo store, the drill moved inside its one epoch",
          subs=(("--drill-at 250 --checkpoint-every 100", "--drill-at 25 --checkpoint-every 20"),),
          extra=("data.batch_size=128",), after=(DEMO_GEN,)),
    Entry(_exact("recmtl train configs/demo.yaml train.ray_address=HEAD_IP:6379 "
                 "train.num_workers=4 train.placement=spread train.min_workers=2 "
                 "train.max_failures=3 train.checkpoint_every_steps=200"), "covered",
          "needs a cluster of hosts; tests/train/test_multinode.py trains the same way on a "
          "two-node ray.cluster_utils.Cluster"),
    # Census-Income: where the CSV is present.
    Entry(_exact(CENSUS_PREP), "run", census=True),
    Entry(_exact("recmtl train data/census/census.yaml"), "heavy",
          "a Ray training on the real split (~40 s); tests/test_census.py checks the preparation",
          extra=CENSUS_TRAIN, after=(CENSUS_PREP,), census=True),
    Entry(r"recmtl train data/census/census\.yaml( [\w.]+=\S+)+", "heavy",
          "one Ray training of 12 epochs on the prepared split, with the figure's overrides",
          extra=CENSUS_TRAIN, after=(CENSUS_PREP,), census=True),
    Entry(_exact("python -m pipelines.bench.quality data/census/census.yaml --suite census"),
          "heavy", "every variant of the suite trains", extra=CENSUS_TRAIN,
          after=(CENSUS_PREP,), census=True),
    Entry(_exact("python -m pipelines.bench.quality data/census/census.yaml --suite census "
                 "--only shared_bottom"), "heavy", extra=CENSUS_TRAIN, after=(CENSUS_PREP,),
          census=True),
    Entry(_exact("python -m pipelines.bench.census"), "heavy",
          "prepares the split, fits the trees and trains MMoE three times", extra=CENSUS_TRAIN,
          census=True),
    # Usage lines and commands named in prose: --help, and the flags they show.
    Entry(r"recmtl (generate|train|prepare|compare|evaluate|export|daily|score --raw)", "help",
          "named in prose"),
    Entry(r"recmtl (train CONFIG|prepare SPEC\.yaml)", "help"),
    Entry(_exact("recmtl <generate|train|evaluate|export> CONFIG [dotted.key=value ...]"), "help"),
    # The README's table of subcommands, one usage line each.
    Entry(_exact("recmtl generate CONFIG [dotted.key=value ...]"), "help"),
    Entry(_exact("recmtl evaluate CONFIG [--checkpoint DIR] [--bundle DIR] [--slice COLUMN] "
                 "[--out DIR]"), "help"),
    Entry(_exact("recmtl score --bundle DIR --data PATH [--out FILE] [--backend NAME] [--keep COL] "
                 "[--raw]"), "help"),
    Entry(r"recmtl compare RUN_A RUN_B( \[--tracking-uri URI\] \[--out PATH\])?", "help"),
    Entry(_exact("recmtl prepare SPEC.yaml [--source URI] [--output DIR] [--previous DIR]"), "help"),
    Entry(_exact("recmtl prepare-census [--src CSV.gz] [--out DIR]"), "help"),
    Entry(_exact("recmtl train CONFIG --warm-start RUN"), "help"),
    Entry(_exact("recmtl train CONFIG [--warm-start RUN] [dotted.key=value ...]"), "help"),
    Entry(_exact("recmtl daily CONFIG [dotted.key=value ...]"), "help"),
    Entry(r"recmtl daily CONFIG( --redo 2026-11-04| \[dotted\.key=value \.\.\.\] \[--redo DAY\])?",
          "help",
          "named in prose; tests/test_daily.py runs continuation, resume and the ledger"),
    Entry(_exact("recmtl prepare --previous"), "help", "named in prose"),
    Entry(_exact("recmtl prepare SPEC.yaml [--source URI] [--output DIR]"), "help"),
    Entry(_exact("recmtl score --bundle DIR --data PATH [--out FILE] [--backend torch|onnx|aoti] "
                 "[--keep COL] [--raw]"), "help"),
    Entry(_exact("recmtl export CONFIG [--checkpoint DIR] [--out DIR]"), "help"),
    Entry(_exact("python -m pipelines.bench.serving --bundle DIR --data PATH"), "help"),
    Entry(_exact("python -m pipelines.bench.quality CONFIG --suite census|synthetic [--only a,b]"),
          "help"),
    Entry(r"python -m pipelines\.bench\.training CONFIG( \[--steps 60\] \[--ray-workers 2\])?",
          "help"),
]


def _entries(command: str) -> list[Entry]:
    return [e for e in TABLE if re.fullmatch(e.pattern, command)]


def _entry(command: str) -> Entry:
    matches = _entries(command)
    assert matches, (
        f"`{command}` has no entry in TABLE of {Path(__file__).name}: add one that says how "
        "it runs on small data (or why it is not run here)")
    assert len(matches) == 1, f"`{command}` matches {len(matches)} TABLE entries: {matches}"
    return matches[0]


class Workspace:
    """A scratch checkout-like directory where documented commands run, each at most once."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.results: dict[str, subprocess.CompletedProcess[str]] = {}
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        self.env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent),
                                            os.environ.get("PATH", "")])

    def argv(self, command: str, entry: Entry) -> list[str]:
        text = command
        for old, new in entry.subs:
            assert old in text, f"entry for {command!r}: {old!r} is not in the command"
            text = text.replace(old, new)
        if "{" in text:
            text = text.format_map(self.fields(command, text))
        argv = shlex.split(text)
        # Overrides go after the documented ones (the last value wins) and before any --option,
        # which argparse needs; other extra arguments go at the end.
        overrides = [a for a in entry.extra if re.match(r"[\w.]+=", a)]
        options = [a for a in entry.extra if a not in overrides]
        keys = [i for i, a in enumerate(argv) if re.match(r"[\w.]+=", a)]
        flags = [i for i, a in enumerate(argv) if a.startswith("--")]
        at = keys[-1] + 1 if keys else flags[0] if flags else len(argv)
        argv = [*argv[:at], *overrides, *argv[at:], *options]
        if argv[0] == "python":
            argv[0] = sys.executable
        elif argv[0] == "recmtl":
            argv[0] = str(Path(sys.executable).parent / "recmtl")
        return argv

    def fields(self, command: str, text: str) -> dict[str, str]:
        fields = {"out": str(self.work / "out" / re.sub(r"\W+", "-", command)[:80])}
        if "{bundle}" in text or "{run" in text:
            runs = sorted((self.work / "runs").glob("demo-*/summary.json"))
            assert runs, f"no run of `{DEMO_TRAIN}` under {self.work / 'runs'}"
            summary = json.loads(runs[-1].read_text())
            fields |= {"bundle": summary["export"], "run": summary["run_dir"],
                       "run_id": summary["run_id"]}
        return fields

    def run(self, command: str, timeout: float) -> subprocess.CompletedProcess[str]:
        if command not in self.results:
            entry = _entry(command)
            for before in entry.after:
                done = self.run(before, timeout)
                if done.returncode != 0:
                    pytest.fail(f"needs `{before}` first, which failed:\n{_tail(done)}")
            self.results[command] = subprocess.run(
                self.argv(command, entry), cwd=self.work, env=self.env, capture_output=True,
                text=True, timeout=timeout)
        return self.results[command]


def _tail(done: subprocess.CompletedProcess[str], chars: int = 3000) -> str:
    return f"$ {shlex.join(done.args)}\nexit {done.returncode}\n{(done.stdout + done.stderr)[-chars:]}"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    base = tmp_path_factory.mktemp("documented")
    work = base / "work"
    work.mkdir()
    (work / "configs").symlink_to(ROOT / "configs", target_is_directory=True)
    if CENSUS_CSV.exists():  # the CLI's default --src is ../shared/data/...
        (base / "shared").symlink_to(ROOT.parent / "shared", target_is_directory=True)
    return Workspace(work)


DOCUMENTED = documented_commands()


def _param(command: str) -> object:
    heavy = any(e.kind == "heavy" for e in _entries(command))
    marks = [pytest.mark.heavy] if heavy else []
    return pytest.param(command, marks=marks, id=command[:90])


@pytest.mark.parametrize("command", [_param(c) for c in DOCUMENTED])
def test_documented_command_runs(command: str, workspace: Workspace) -> None:
    where = ", ".join(DOCUMENTED[command])
    print(f"documented at {where}")
    entry = _entry(command)
    if entry.kind == "covered":
        assert entry.why
        return
    if entry.kind == "help":
        _check_help(command)
        return
    if entry.census and not CENSUS_CSV.exists():
        pytest.skip(f"no Census-Income data at {CENSUS_CSV}")
    done = workspace.run(command, timeout=3600 if entry.kind == "heavy" else 600)
    assert done.returncode == 0, f"`{command}` ({where}) failed:\n{_tail(done)}"


def _check_help(command: str) -> None:
    words = command.split()
    if words[0] == "recmtl":
        alternatives = re.fullmatch(r"<(.+)>", words[1])
        subcommands = alternatives.group(1).split("|") if alternatives else [words[1]]
        calls = [[str(Path(sys.executable).parent / "recmtl"), sub, "--help"]
                 for sub in subcommands]
    else:
        calls = [[sys.executable, "-m", words[2], "--help"]]
    flags = set(re.findall(r"--[\w-]+", command))
    for argv in calls:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"`{command}`: {_tail(done)}"
        missing = sorted(f for f in flags if f not in done.stdout)
        assert not missing, f"`{command}`: {shlex.join(argv)} does not offer {missing}"


def test_every_entry_is_documented() -> None:
    stale = [e.pattern for e in TABLE
             if not any(re.fullmatch(e.pattern, c) for c in DOCUMENTED)]
    assert not stale, f"TABLE entries that match no documented command (remove them): {stale}"
