"""pipelines/bench/harness.py: the shared command line, the turn-taking timer, the JSON
envelope and the printed table, each against figures worked out by hand."""

import json
import shlex
import time
from datetime import datetime

import numpy as np
import pytest

from pipelines.bench.harness import (
    bench_parser,
    format_table,
    interleave,
    paired,
    parse,
    run_bench,
    timed,
    write_results,
)
from recmtl.errors import RecmtlError

# --- the table ---------------------------------------------------------------------------------

ROWS = [{"arch": "mmoe", "auc": 0.81234, "samples/s": 12345.6, "steps": 40},
        {"arch": "sparse_moe", "auc": 0.8, "samples/s": 999.5, "steps": 1200, "note": "slow"},
        {"arch": "x", "auc": None, "samples/s": 3.0}]


def test_table_aligns_numbers_right_and_text_left():
    # widths: arch 10 ("sparse_moe"), auc 6, samples/s 9 (the header), steps 5, note 4;
    # two spaces between columns; blank cells for missing keys, "-" for None; no trailing blanks
    want = ("arch           auc  samples/s  steps  note\n"
            "----------  ------  ---------  -----  ----\n"
            "mmoe        0.8123     12,346     40\n"
            "sparse_moe  0.8000   999.5000  1,200  slow\n"
            "x                -     3.0000")
    assert format_table(ROWS) == want


def test_table_takes_a_format_per_column_and_writes_markdown():
    rows = [{"task": "ctr", "auc": 0.81234, "rows": 1000}, {"task": "cvr", "auc": 0.7}]
    assert format_table(rows, {"auc": ".2f"}) == ("task   auc   rows\n"
                                                  "----  ----  -----\n"
                                                  "ctr   0.81  1,000\n"
                                                  "cvr   0.70")
    assert format_table(rows, {"auc": ".2f"}, markdown=True) == ("| task | auc | rows |\n"
                                                                 "| --- | --- | --- |\n"
                                                                 "| ctr | 0.81 | 1,000 |\n"
                                                                 "| cvr | 0.70 |  |")
    assert format_table([]) == ""


def test_a_column_with_text_in_it_is_left_aligned_but_formatted_numbers_are_numbers():
    rows = [{"k": 1.5}, {"k": "n/a"}, {"k": np.float32(2.25)}, {"k": True}]
    assert format_table(rows).splitlines() == ["k", "------", "1.5000", "n/a", "2.2500", "True"]
    rows = [{"d": "+0.0450"}, {"d": "-0.1"}, {"d": "12,345"}, {"d": 7}]
    assert format_table(rows).splitlines() == ["      d", "-------", "+0.0450", "   -0.1", " 12,345",
                                               "      7"]


# --- the turn-taking timer ---------------------------------------------------------------------

def test_paired_alternates_and_ratios_each_round():
    calls: list[str] = []
    figures = {"A": iter([99.0, 10.0, 20.0, 30.0]), "B": iter([99.0, 5.0, 5.0, 10.0])}

    def call(name):
        def f():
            calls.append(name)
            return next(figures[name])
        return f

    result = paired(call("A"), call("B"), repeats=3, warmup=1)
    assert calls == ["A", "B"] * 4  # the warm-up round first, unkept
    assert result.runs == {"variant": [10.0, 20.0, 30.0], "baseline": [5.0, 5.0, 10.0]}
    assert result.ratios("variant") == [2.0, 4.0, 3.0]
    assert result.ratio("variant") == 3.0 and result.median("baseline") == 5.0
    summary = result.summary()
    assert summary["variant"] == {"median": 20.0, "runs": [10.0, 20.0, 30.0],
                                  "ratios": [2.0, 4.0, 3.0], "ratio": 3.0}
    assert summary["baseline"] == {"median": 5.0, "runs": [5.0, 5.0, 10.0]}


def test_interleave_keeps_the_mapping_order_and_checks_the_baseline():
    calls: list[str] = []
    result = interleave({n: (lambda n=n: calls.append(n) or 1.0) for n in "xyz"}, "y", repeats=2)
    assert calls == ["x", "y", "z", "x", "y", "z"]
    assert result.ratios("z") == [1.0, 1.0]
    with pytest.raises(ValueError, match="baseline 'w'"):
        interleave({"x": lambda: 1.0}, "w", repeats=1)


def test_timed_pairs_give_the_ratio_of_the_work():
    calls: list[str] = []

    def sleeper(name, seconds):
        def f():
            calls.append(name)
            time.sleep(seconds)
        return timed(f)

    result = paired(sleeper("slow", 0.030), sleeper("fast", 0.010), repeats=9)
    assert calls == ["slow", "fast"] * 9
    assert 0.030 <= result.median("variant") < 0.040
    assert 0.010 <= result.median("baseline") < 0.020
    assert result.ratio("variant") == pytest.approx(3.0, abs=0.45)


# --- the command line --------------------------------------------------------------------------

def test_parser_has_the_shared_flags_and_keeps_the_command():
    parser = bench_parser("demo", None, config="required", repeats=3, out_alias=True)
    parser.add_argument("--steps", type=int, default=7)
    argv = ["cfg.yaml", "a.b=1", "--repeats", "5", "name=two words", "--out", "r.json", "c=x=y"]
    args = parse(parser, argv)
    assert (args.config, args.overrides) == ("cfg.yaml", ["a.b=1", "name=two words", "c=x=y"])
    assert (args.repeats, args.json, args.steps, args.bench) == (5, "r.json", 7, "demo")
    assert args.command == ("python -m pipelines.bench.demo cfg.yaml a.b=1 --repeats 5 "
                            "'name=two words' --out r.json c=x=y")
    assert shlex.split(args.command)[3:] == argv
    assert parse(parser, ["cfg.yaml", "--json", "j.json"]).json == "j.json"
    assert parse(parser, ["cfg.yaml"]).repeats == 3


def test_parser_rejects_what_is_not_an_override(capsys):
    parser = bench_parser("demo", None, config="required")
    with pytest.raises(SystemExit) as exit_:
        parse(parser, ["cfg.yaml", "model.arch=ple", "oops"])
    assert exit_.value.code == 2
    assert "'oops' is not dotted.key=value" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # no --repeats where the bench has none
        parse(parser, ["cfg.yaml", "--repeats", "2"])


def test_parser_config_optional_absent_or_overrides_alone():
    optional = bench_parser("demo", None, config="optional", default_config="configs/smoke.yaml")
    assert parse(optional, []).config == "configs/smoke.yaml"
    assert parse(optional, ["--json", "x"]).overrides == []
    alone = bench_parser("demo", None, overrides=True, json_default="runs/demo.json")
    args = parse(alone, ["train.epochs=1"])
    assert args.overrides == ["train.epochs=1"] and args.json == "runs/demo.json"
    assert not hasattr(args, "config")
    bare = bench_parser("demo", None)
    assert vars(parse(bare, [])).keys() == {"bench", "json", "command"}


# --- the JSON ----------------------------------------------------------------------------------

def test_results_round_trip_in_the_envelope(tmp_path, capsys):
    parser = bench_parser("demo", None, config="required")
    out = tmp_path / "deep" / "r.json"
    args = parse(parser, ["cfg.yaml", "x=1", "--json", str(out)])
    results = {"rows": 3, "auc": {"ctr": 0.75, "cvr": None}, "names": ["a", "b"], "ok": True}
    assert write_results(args, results) == out
    assert capsys.readouterr().out == f"wrote {out}\n"
    written = json.loads(out.read_text())
    assert set(written) == {"bench", "command", "machine", "date", "results"}
    assert written["results"] == results
    assert written["bench"] == "demo"
    assert written["command"] == f"python -m pipelines.bench.demo cfg.yaml x=1 --json {out}"
    assert set(written["machine"]) == {"cpus", "platform", "python", "torch"}
    assert written["machine"]["cpus"] >= 1
    assert datetime.fromisoformat(written["date"]).tzinfo is not None


def test_numpy_values_become_plain_json_and_the_default_path_applies(tmp_path):
    args = parse(bench_parser("demo", None), [])
    assert write_results(args, {"x": 1}) is None  # neither --json nor a default: nothing
    path = write_results(args, {"p": np.float32(0.5), "a": np.arange(3)}, tmp_path / "d.json")
    assert json.loads(path.read_text())["results"] == {"p": 0.5, "a": [0, 1, 2]}


def test_run_bench_turns_an_expected_failure_into_exit_code_2(capsys):
    def fails():
        raise RecmtlError("no store at data/x")

    assert run_bench(fails) == 2
    assert capsys.readouterr().err == "bench: error: no store at data/x\n"
    assert run_bench(lambda: None) == 0
