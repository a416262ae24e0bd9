"""Plot axes and number formats of the report pages, against hand-worked values."""

import math
import re

import numpy as np
import pytest

from recmtl.metrics.formatting import format_interval, format_value
from recmtl.metrics.svg import Axes, nice_ticks, tick_label


@pytest.mark.parametrize(("lo", "hi", "want"), [
    (0, 1, [0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    (0, 730, [0, 200, 400, 600, 800]),
    (0, 0.315, [0, 0.1, 0.2, 0.3, 0.4]),
    (0, 0.24, [0, 0.05, 0.1, 0.15, 0.2, 0.25]),
    (-0.0176, 0.0191, [-0.02, -0.01, 0, 0.01, 0.02]),
    (0, 6123, [0, 2000, 4000, 6000, 8000]),
])
def test_nice_ticks_hand_worked(lo, hi, want):
    assert nice_ticks(lo, hi) == pytest.approx(want, abs=1e-12)


def test_nice_ticks_cover_the_range_in_round_steps():
    rng = np.random.default_rng(0)
    for _ in range(300):
        lo = float(rng.uniform(-5, 5)) * 10.0 ** rng.integers(-4, 5)
        hi = lo + float(rng.uniform(1e-3, 10)) * 10.0 ** rng.integers(-4, 5)
        ticks = nice_ticks(lo, hi)
        step = ticks[1] - ticks[0]
        assert ticks[0] <= lo + 1e-9 * abs(lo) and ticks[-1] >= hi - 1e-9 * abs(hi)
        assert 3 <= len(ticks) <= 12, (lo, hi, ticks)
        mantissa = step / 10 ** math.floor(math.log10(step))
        assert min(abs(mantissa - m) for m in (1, 2, 5, 10)) < 1e-6, (lo, hi, step)
        assert np.allclose(np.diff(ticks), step, rtol=1e-6)


def test_tick_labels_show_as_many_decimals_as_the_step():
    assert [tick_label(v, 0.2) for v in nice_ticks(0, 1)] == ["0.0", "0.2", "0.4", "0.6", "0.8",
                                                              "1.0"]
    assert [tick_label(v, 0.05) for v in (0, 0.05, 0.35)] == ["0.00", "0.05", "0.35"]
    assert [tick_label(v, 2000) for v in (0, 2000, 8000)] == ["0", "2k", "8k"]
    assert tick_label(-0.01, 0.01) == "-0.01" and tick_label(1e-18, 0.01) == "0.00"


def test_axes_map_the_data_corners_to_the_plot_corners():
    ax = Axes(-1.0, 3.0, 10.0, 20.0, width=300, height=200, left=50, right=10, top=20, bottom=30)
    assert ax.px(-1, 10) == (50, 170) and ax.px(3, 20) == (290, 20)
    assert ax.px(1, 15) == (170, 95)


def test_intervals_print_with_four_decimals():
    assert format_interval(0.76694, [0.76331, 0.77062]) == "0.7669 [0.7633, 0.7706]"
    assert format_interval(0.76694, (0.76331, 0.77062)) == "0.7669 [0.7633, 0.7706]"
    assert format_interval(0.0043, [0.00214, 0.00656], signed=True) == "+0.0043 [+0.0021, +0.0066]"
    assert format_interval(-0.002, [-0.0176, 0.0136], signed=True) == "-0.0020 [-0.0176, +0.0136]"
    assert format_interval(0.7, None) == "0.7000" and format_interval(None, [0.1, 0.2]) == "-"
    assert format_value(None) == "-" and format_value(0.5, signed=True) == "+0.5000"
    pattern = r"-?\d\.\d{4} \[-?\d\.\d{4}, -?\d\.\d{4}\]"
    rng = np.random.default_rng(1)
    for v, lo, hi in rng.random((50, 3)):
        assert re.fullmatch(pattern, format_interval(v, [lo, hi]))
