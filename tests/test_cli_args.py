"""Overrides stand anywhere on the command line: before or after an option."""

import pytest

from pipelines.cli import _parse, _parser


@pytest.mark.parametrize("argv", [
    ["train", "c.yaml", "--warm-start", "RUN", "a.b=1", "c=2"],
    ["train", "c.yaml", "a.b=1", "--warm-start", "RUN", "c=2"],
    ["train", "c.yaml", "a.b=1", "c=2", "--warm-start", "RUN"],
])
def test_train_overrides_in_any_order(argv):
    args = _parse(_parser(), argv)
    assert (args.warm_start, args.overrides) == ("RUN", ["a.b=1", "c=2"])


def test_daily_overrides_after_an_option():
    args = _parse(_parser(), ["daily", "c.yaml", "--verbose", "daily.days=2"])
    assert args.verbose and args.overrides == ["daily.days=2"]


@pytest.mark.parametrize("argv", [
    ["train", "c.yaml", "--warm-start", "RUN", "stray"],      # not key=value
    ["train", "c.yaml", "--no-such-flag"],
    ["score", "--bundle", "B", "--data", "D", "a=1"],         # score takes no overrides
])
def test_anything_else_is_refused(argv, capsys):
    with pytest.raises(SystemExit) as e:
        _parse(_parser(), argv)
    assert e.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err
