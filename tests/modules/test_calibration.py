import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch
from scipy.special import expit
from torch import nn

from recmtl.metrics.fit_calibration import fit_isotonic, fit_platt, fit_temperature_bias
from recmtl.modules.calibration import (
    IdentityCalibrator,
    IsotonicCalibrator,
    PlattCalibrator,
    TaskCalibrators,
    TemperatureCalibrator,
    calibrate_composed,
    calibrator_from_description,
    product_logit,
)


def _float64_logit(p):
    return np.log(p) - np.log1p(-p)


@pytest.fixture(scope="module")
def fits():
    """Fits on float32 model logits in a narrow range, so test points fall outside it."""
    rng = np.random.default_rng(0)
    f = rng.uniform(-3.0, 2.0, 3000).astype(np.float32).astype(np.float64)
    y = (rng.random(len(f)) < expit(0.7 * f - 0.3)).astype(np.float64)
    return {"isotonic": fit_isotonic(f, y), "thinned": fit_isotonic(f, y, max_knots=32),
            "platt": fit_platt(f, y), "temperature": fit_temperature_bias(f, y)}


def _modules(fits):
    return {"identity": IdentityCalibrator(),
            "isotonic": IsotonicCalibrator(*fits["isotonic"]),
            "thinned": IsotonicCalibrator(*fits["thinned"]),
            "platt": PlattCalibrator(*fits["platt"]),
            "temperature": TemperatureCalibrator(*fits["temperature"])}


def _reference(kind, fits, logit32):
    """The float64 calibrated probability at the module's float32 input."""
    f = logit32.double().numpy()
    if kind in ("isotonic", "thinned"):
        return np.interp(f, *fits[kind])
    a, b = fits[kind] if kind in ("platt", "temperature") else (1.0, 0.0)
    return expit(a * f + b)


def _test_logits(n=4000, seed=1):
    rng = np.random.default_rng(seed)
    points = np.r_[rng.uniform(-12.0, 12.0, n), rng.uniform(-3.0, 2.0, n), -40.0, 0.0, 40.0]
    return torch.tensor(points, dtype=torch.float32)


@pytest.mark.parametrize("kind", ["identity", "isotonic", "thinned", "platt", "temperature"])
def test_modules_equal_the_float64_fits(fits, kind):
    logit = _test_logits()
    with torch.no_grad():
        got = _modules(fits)[kind](logit)
    assert got.dtype == torch.float32 and got.shape == logit.shape
    np.testing.assert_allclose(got.double().numpy(), _reference(kind, fits, logit), rtol=0, atol=1e-6)


def test_isotonic_clips_outside_the_knots(fits):
    x, y = fits["isotonic"]
    cal = IsotonicCalibrator(x, y)
    with torch.no_grad():
        ends = cal(torch.tensor([-30.0, -8.0, 8.0, 30.0]))
    np.testing.assert_allclose(ends.numpy(), np.float32([y[0], y[0], y[-1], y[-1]]), rtol=0, atol=0)


def test_isotonic_hand_worked_steps():
    # Repeated knots make a right-continuous step.
    cal = IsotonicCalibrator([0.0, 0.0, 2.0], [0.1, 0.4, 0.9])
    logit = torch.tensor([-3.0, -1e-30, 0.0, 1.0, 1.5, 2.0, 5.0])
    np.testing.assert_allclose(cal(logit).numpy(), [0.1, 0.1, 0.4, 0.65, 0.775, 0.9, 0.9], rtol=0,
                               atol=6e-8)
    single = IsotonicCalibrator([0.3], [0.2])
    np.testing.assert_array_equal(single(torch.tensor([-5.0, 0.0, 5.0])).numpy(), np.float32(0.2))


def test_outputs_are_monotone_in_float32(fits):
    logit = torch.linspace(-15.0, 15.0, 300001)
    steep = IsotonicCalibrator([0.5, 0.5 + 1e-7, 0.5 + 2e-7, 0.6], [0.01, 0.33, 0.97, 0.99])
    on_the_grid = IsotonicCalibrator(logit[1000:1003].numpy(), [0.01, 0.33, 0.97])
    with torch.no_grad():
        for name, cal in [*_modules(fits).items(), ("steep", steep), ("grid", on_the_grid)]:
            assert (torch.diff(cal(logit)) >= 0).all(), name


def _roundtrip(cal):
    return calibrator_from_description(json.loads(json.dumps(cal.describe())))


def test_describe_and_state_dict_round_trip(fits):
    logit = _test_logits(n=500)
    for name, cal in _modules(fits).items():
        again = _roundtrip(cal)
        assert type(again) is type(cal), name
        assert again.describe() == cal.describe()
        for key, value in cal.state_dict().items():
            assert value.dtype == torch.float32
            torch.testing.assert_close(again.state_dict()[key], value, rtol=0, atol=0)
        torch.testing.assert_close(again(logit), cal(logit), rtol=0, atol=0)
    # A module of the same shape takes the state_dict and computes the same function.
    x, y = fits["thinned"]
    other = IsotonicCalibrator(np.linspace(0, 1, len(x)), np.linspace(0, 1, len(x)))
    other.load_state_dict(IsotonicCalibrator(x, y).state_dict())
    np.testing.assert_allclose(other(logit).double().numpy(), _reference("thinned", fits, logit),
                               rtol=0, atol=1e-6)
    platt = PlattCalibrator(0.0, 0.0)
    platt.load_state_dict(PlattCalibrator(*fits["platt"]).state_dict())
    assert platt.describe() == PlattCalibrator(*fits["platt"]).describe()


def _tasks(fits, direct=True):
    calibrators = {"ctr": PlattCalibrator(*fits["platt"]), "cvr": IsotonicCalibrator(*fits["thinned"])}
    if direct:
        calibrators["ctcvr"] = TemperatureCalibrator(*fits["temperature"])
    calibrators["aux"] = None
    return TaskCalibrators(calibrators, products={"ctcvr": ["ctr", "cvr"]})


class _Positional(nn.Module):
    """ONNX-friendly view of ``TaskCalibrators``: positional logits in, a tuple out."""

    def __init__(self, tasks: TaskCalibrators) -> None:
        super().__init__()
        self.tasks = tasks

    def forward(self, ctr, cvr, aux):
        out = self.tasks({"ctr": ctr, "cvr": cvr, "aux": aux})
        return out["ctr"], out["cvr"], out["ctcvr"], out["aux"]


def _task_inputs(n, seed):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(n, generator=g) * 4 for _ in range(3))


def test_task_calibrators_round_trip_and_reference(fits):
    tasks = _tasks(fits)
    ctr, cvr, aux = _task_inputs(2000, 2)
    with torch.no_grad():
        out = tasks({"ctr": ctr, "cvr": cvr, "aux": aux})
        again = TaskCalibrators.from_description(json.loads(json.dumps(tasks.describe())))
        for task, value in again({"ctr": ctr, "cvr": cvr, "aux": aux}).items():
            torch.testing.assert_close(value, out[task], rtol=0, atol=0)
    assert list(out) == ["ctr", "cvr", "aux", "ctcvr"]
    p_ctr = _reference("platt", fits, ctr)
    p_cvr = _reference("thinned", fits, cvr)
    raw = expit(ctr.double().numpy()) * expit(cvr.double().numpy())
    direct = expit(fits["temperature"][0] * _float64_logit(raw) + fits["temperature"][1])
    want = {"ctr": p_ctr, "cvr": p_cvr, "aux": expit(aux.double().numpy()),
            "ctcvr": np.minimum(direct, np.minimum(p_ctr, p_cvr))}
    for task, value in want.items():
        np.testing.assert_allclose(out[task].double().numpy(), value, rtol=0, atol=2e-6, err_msg=task)


def test_composed_tasks_stay_consistent(fits):
    ctr, cvr, aux = _task_inputs(5000, 3)
    with torch.no_grad():
        product = _tasks(fits, direct=False)({"ctr": ctr, "cvr": cvr, "aux": aux})
        direct = _tasks(fits)({"ctr": ctr, "cvr": cvr, "aux": aux})
    torch.testing.assert_close(product["ctcvr"], product["ctr"] * product["cvr"], rtol=0, atol=0)
    for out in (product, direct):
        assert (out["ctcvr"] <= out["ctr"]).all() and (out["ctcvr"] <= out["cvr"]).all()
    # Both sides of the cap occur: the direct calibration wins on some rows, a factor on others.
    capped = direct["ctcvr"] == torch.minimum(direct["ctr"], direct["cvr"])
    assert 0 < int(capped.sum()) < len(ctr)


def test_calibrate_composed_hand_worked():
    ctr, cvr = torch.tensor([0.5, 0.2, 0.9]), torch.tensor([0.4, 0.5, 0.1])
    torch.testing.assert_close(calibrate_composed(ctr, cvr), torch.tensor([0.2, 0.1, 0.09]))
    got = calibrate_composed(ctr, cvr, direct=torch.tensor([0.3, 0.15, 0.05]))
    torch.testing.assert_close(got, torch.tensor([0.3, 0.15, 0.05]).minimum(ctr).minimum(cvr))
    assert got.tolist() == pytest.approx([0.3, 0.15, 0.05])
    with pytest.raises(ValueError, match="at least one component"):
        calibrate_composed()


def test_product_logit_matches_float64():
    grid = torch.linspace(-20.0, 20.0, 81)
    l1, l2 = torch.meshgrid(grid, grid, indexing="ij")
    l1, l2 = l1.reshape(-1), l2.reshape(-1)
    want = _float64_logit(expit(l1.double().numpy()) * expit(l2.double().numpy()))
    got = product_logit([l1, l2]).double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(product_logit([torch.tensor([200.0]), torch.tensor([200.0])])).all()


def _exportables(fits):
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    cases = {name: (cal, (torch.linspace(-6, 6, 8),), {"logit": {0: batch}})
             for name, cal in _modules(fits).items()}
    cases["tasks"] = (_Positional(_tasks(fits)), _task_inputs(8, 4),
                      {"ctr": {0: batch}, "cvr": {0: batch}, "aux": {0: batch}})
    return cases


def _as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def _inputs(name, n):
    """Wide logits: onnxruntime's Sigmoid flushes to 0 near -17, which a log must not see."""
    rng = np.random.default_rng(n)
    count = 3 if name == "tasks" else 1
    return tuple(torch.tensor(rng.uniform(-25, 25, n), dtype=torch.float32) for _ in range(count))


@pytest.mark.parametrize("name", ["identity", "isotonic", "thinned", "platt", "temperature",
                                  "tasks"])
def test_torch_export_parity(fits, name):
    module, example, shapes = _exportables(fits)[name]
    program = torch.export.export(module.eval(), example, dynamic_shapes=shapes)
    for n in (1, 37):
        inputs = _inputs(name, n)
        for got, want in zip(_as_tuple(program.module()(*inputs)), _as_tuple(module(*inputs)),
                             strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-7)


@pytest.mark.parametrize("name", ["identity", "isotonic", "thinned", "platt", "temperature",
                                  "tasks"])
def test_onnx_export_parity(fits, name, tmp_path):
    module, example, shapes = _exportables(fits)[name]
    names = list(shapes)
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(module.eval(), example, str(path), dynamo=True, input_names=names,
                      dynamic_shapes=shapes, verbose=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == names
    for n in (1, 37, 20000):
        inputs = _inputs(name, n)
        got = session.run(None, {k: v.numpy() for k, v in zip(names, inputs, strict=True)})
        with torch.no_grad():
            want = _as_tuple(module(*inputs))
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert g.shape == (n,)
            np.testing.assert_allclose(g, w.numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("build, message", [
    (lambda: IsotonicCalibrator([0.1, 0.5, 0.4], [0.1, 0.2, 0.3]), "x_knots must be nondecreasing"),
    (lambda: IsotonicCalibrator([0.1, 0.4, 0.5], [0.1, 0.3, 0.2]), "y_knots must be nondecreasing"),
    (lambda: IsotonicCalibrator([0.1, 0.4, 2.0], [0.1, 0.2, 1.3]), r"y_knots must lie in \[0, 1\]"),
    (lambda: IsotonicCalibrator([0.1, 0.4], [0.1, 0.2, 0.3]), "one length"),
    (lambda: IsotonicCalibrator([], []), "one length"),
    (lambda: IsotonicCalibrator([0.1, np.nan], [0.1, 0.2]), "NaN"),
    (lambda: PlattCalibrator(float("inf"), 0.0), "a must be finite"),
    (lambda: calibrator_from_description({"kind": "beta", "a": 1.0}), "unknown calibrator kind 'beta'"),
    (lambda: calibrator_from_description({"kind": "platt", "a": 1.0}), r"takes keys \['a', 'b', 'kind'\]"),
    (lambda: TaskCalibrators({"ctr": None}, products={"ctcvr": ["ctr", "cvr"]}), "composed task 'ctcvr'"),
    (lambda: TaskCalibrators({"ctr": nn.Sigmoid()}), "needs describe"),
    (lambda: TaskCalibrators.from_description({"tasks": {}}), "task calibrators take keys"),
])
def test_invalid_calibrators_raise(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_module_imports_no_ray_mlflow_or_pipelines():
    code = ("import sys, recmtl.modules.calibration, recmtl.metrics.fit_calibration; "
            "bad = [m for m in ('ray', 'mlflow', 'pipelines') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
