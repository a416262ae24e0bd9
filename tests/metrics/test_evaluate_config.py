from pathlib import Path

import pytest

from pipelines.jobs.evaluate import with_slices
from recmtl.config import ConfigError, load_config

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"


def test_evaluate_section_defaults_and_overrides():
    cfg = load_config(SMOKE)
    assert (cfg.evaluate.slices, cfg.evaluate.bootstrap, cfg.evaluate.max_slices) == ((), 200, 50)
    assert cfg.evaluate.save_predictions is False
    cfg = load_config(SMOKE, ["evaluate.slices=[user_segment, device]", "evaluate.bootstrap=0",
                              "evaluate.save_predictions=true"])
    assert cfg.evaluate.slices == ("user_segment", "device") and cfg.evaluate.bootstrap == 0
    # --slice adds to the configured columns, once each.
    assert with_slices(cfg, ["device", "slot"]).evaluate.slices == ("user_segment", "device", "slot")


@pytest.mark.parametrize("override, message", [
    ("evaluate.bootstrap=-1", r"evaluate\.bootstrap: -1 must be >= 0"),
    ("evaluate.max_slices=0", r"evaluate\.max_slices: 0 must be >= 1"),
    ("evaluate.slices=[a, a]", r"evaluate\.slices: duplicate column"),
    ("evaluate.slices=user_segment", r"key 'evaluate\.slices': expected a list"),
    ("evaluate.slice=[a]", r"key 'evaluate': unknown key\(s\) \['slice'\]"),
])
def test_bad_evaluate_section_names_the_key_and_file(override, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_config(SMOKE, [override])
    assert "smoke.yaml" in str(e.value)
