"""Learning-rate schedules: hand-worked factors, and the groups they drive."""

import math

import pytest

from recmtl.config import ScheduleConfig
from recmtl.train.schedule import LRSchedule, lr_factor


def test_warmup_is_linear_from_the_first_step():
    s = ScheduleConfig(warmup_steps=4)
    assert [lr_factor(s, i, 100) for i in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_linear_and_cosine_decay_end_at_the_final_factor():
    # warm-up 2, then steps 2..10 decay over a span of 8 steps
    lin = ScheduleConfig(warmup_steps=2, decay="linear", final_factor=0.2)
    cos = ScheduleConfig(warmup_steps=2, decay="cosine", final_factor=0.2)
    assert lr_factor(lin, 2, 11) == 1.0 and lr_factor(cos, 2, 11) == pytest.approx(1.0)
    assert lr_factor(lin, 6, 11) == pytest.approx(0.6)  # halfway: 1 + (0.2 - 1) * 0.5
    assert lr_factor(cos, 6, 11) == pytest.approx(0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert lr_factor(lin, 10, 11) == pytest.approx(0.2) and lr_factor(cos, 10, 11) == pytest.approx(0.2)
    assert lr_factor(cos, 50, 11) == pytest.approx(0.2)  # past the end: stays


def test_schedule_scales_each_group_from_its_own_base_rate():
    dense = [{"lr": 0.01}, {"lr": 0.02}]
    sparse = [{"lr": 0.1}]
    schedule = LRSchedule([(ScheduleConfig(warmup_steps=2), dense),
                           (ScheduleConfig(decay="linear"), sparse)], total_steps=5)
    schedule.set_step(0)
    assert [g["lr"] for g in dense] == pytest.approx([0.005, 0.01])
    assert sparse[0]["lr"] == pytest.approx(0.1)
    schedule.set_step(4)  # restoring at any step gives the same rates: no compounding
    schedule.set_step(4)
    assert [g["lr"] for g in dense] == pytest.approx([0.01, 0.02])
    assert sparse[0]["lr"] == pytest.approx(0.0)
