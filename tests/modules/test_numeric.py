import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch

from recmtl.modules.numeric import PeriodicEncoding, PiecewiseLinearEncoding, quantile_edges

EDGES = [[0.0, 1.0, 3.0, 7.0], [-2.0, 2.0], [10.0, 20.0, 25.0]]


def _ple_reference(x, boundaries):
    """float64 PLE, the paper's definition written out per bin: ``[B, F, max bins]``."""
    width = max(len(b) for b in boundaries) - 1
    out = np.zeros((x.shape[0], len(boundaries), width))
    for f, b in enumerate(boundaries):
        t_last = len(b) - 2
        for t in range(len(b) - 1):
            for i, v in enumerate(x[:, f]):
                if v < b[t] and t > 0:
                    e = 0.0
                elif v >= b[t + 1] and t < t_last:
                    e = 1.0
                else:
                    e = (v - b[t]) / (b[t + 1] - b[t])
                out[i, f, t] = e
    return out


def _linear_reference(components, module):
    """float64 per-feature linear map from the module's own parameters."""
    w = module.linear.weight.detach().double().numpy()
    b = module.linear.bias.detach().double().numpy()
    out = np.stack([components[:, f] @ w[f] + b[f] for f in range(w.shape[0])], axis=1)
    return out


def test_ple_components_hand_worked():
    ple = PiecewiseLinearEncoding(EDGES, dim=3)
    x = torch.tensor([[-1.0, -4.0, 5.0],     # below the first edge of each feature
                      [0.0, -2.0, 10.0],      # on the first edge
                      [2.0, 0.0, 22.5],       # inside
                      [3.0, 2.0, 25.0],       # on an inner edge / on the last edge
                      [9.0, 6.0, 35.0]])      # above the last edge
    want = np.array([
        [[-1.0, 0.0, 0.0], [-0.5, 0.0, 0.0], [-0.5, 0.0, 0.0]],
        [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
        [[1.0, 0.5, 0.0], [0.5, 0.0, 0.0], [1.0, 0.5, 0.0]],
        [[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]],
        [[1.0, 1.0, 1.5], [2.0, 0.0, 0.0], [1.0, 3.0, 0.0]],
    ])
    got = ple.components(x).double().numpy()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(_ple_reference(x.double().numpy(), EDGES), want)


def test_ple_matches_float64_reference():
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.uniform(-5, 30, (500, 3)), dtype=torch.float32)
    for activation in (False, True):
        ple = PiecewiseLinearEncoding(EDGES, dim=4, activation=activation)
        with torch.no_grad():
            got = ple(x)
        assert got.shape == (500, 12) and ple.output_dim == 12
        comp = _ple_reference(x.double().numpy(), EDGES)
        np.testing.assert_allclose(ple.components(x).double().numpy(), comp, rtol=0, atol=1e-6)
        want = _linear_reference(comp, ple)
        if activation:
            want = np.maximum(want, 0.0)
        np.testing.assert_allclose(got.double().numpy(), want.reshape(500, 12), rtol=0, atol=1e-5)


def test_ple_padded_to_num_bins_takes_a_state_dict():
    x = _inputs(50, 3)
    ple = PiecewiseLinearEncoding(EDGES, dim=2, num_bins=5)
    assert ple.components(x).shape == (50, 3, 5)
    np.testing.assert_allclose(ple.components(x)[..., :3].double().numpy(),
                               _ple_reference(x.double().numpy(), EDGES), rtol=0, atol=1e-6)
    placeholder = PiecewiseLinearEncoding([[0.0, 1.0]] * 3, dim=2, num_bins=5)
    placeholder.load_state_dict(ple.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(placeholder(x), ple(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="num_bins 2 is below a feature's 3 bins"):
        PiecewiseLinearEncoding(EDGES, dim=2, num_bins=2)


def test_ple_feature_blocks_are_independent():
    ple = PiecewiseLinearEncoding(EDGES, dim=2)
    x = torch.tensor([[0.5, 1.0, 12.0]])
    moved = x.clone()
    moved[0, 1] = -1.5
    with torch.no_grad():
        a, b = ple(x).view(3, 2), ple(moved).view(3, 2)
    torch.testing.assert_close(a[[0, 2]], b[[0, 2]], rtol=0, atol=0)
    assert not torch.equal(a[1], b[1])


def test_periodic_matches_numpy():
    torch.manual_seed(0)
    enc = PeriodicEncoding(num_features=3, num_frequencies=5, sigma=0.5, dim=4)
    c = enc.frequencies.detach().double().numpy()
    assert c.shape == (3, 5)
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.normal(0, 2, (300, 3)), dtype=torch.float32)
    xd = x.double().numpy()
    v = 2 * np.pi * c[None] * xd[:, :, None]
    feats = np.concatenate([np.sin(v), np.cos(v)], axis=-1)
    with torch.no_grad():
        np.testing.assert_allclose(enc.features(x).double().numpy(), feats, rtol=0, atol=2e-5)
        got = enc(x)
    assert got.shape == (300, 12) and enc.output_dim == 12
    want = np.maximum(_linear_reference(feats, enc), 0.0).reshape(300, 12)
    np.testing.assert_allclose(got.double().numpy(), want, rtol=0, atol=5e-5)
    assert (got == 0).any() and (got > 0).any()


def test_frequency_init_scale_follows_sigma():
    torch.manual_seed(0)
    enc = PeriodicEncoding(num_features=50, num_frequencies=200, sigma=0.1, dim=1)
    assert float(enc.frequencies.detach().std()) == pytest.approx(0.1, rel=0.05)


def test_quantile_edges():
    col = np.arange(101, dtype=np.float64)
    values = np.stack([col, np.full(101, 3.0), np.r_[np.zeros(90), np.arange(11.0)]], axis=1)
    values[5, 0] = np.nan
    edges = quantile_edges(values, 4)
    np.testing.assert_allclose(edges[0], np.quantile(np.delete(col, 5), np.linspace(0, 1, 5)))
    assert edges[1] == [3.0, 4.0]
    assert edges[2] == sorted(set(edges[2])) and len(edges[2]) < 5
    PiecewiseLinearEncoding(edges, dim=2)


def test_gradients_reach_every_parameter():
    ple = PiecewiseLinearEncoding(EDGES, dim=2, activation=False)
    enc = PeriodicEncoding(3, 4, 1.0, 2, activation=False)
    x = torch.tensor([[0.5, 1.0, 12.0], [4.0, -1.0, 30.0]])
    for module in (ple, enc):
        module(x).square().sum().backward()
        for name, p in module.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    # Padded bins never see a gradient: their component is exactly zero.
    assert ple.linear.weight.grad is not None
    assert float(ple.linear.weight.grad[1, 1:].abs().sum()) == 0.0


def _modules():
    torch.manual_seed(0)
    return {"ple": PiecewiseLinearEncoding(EDGES, dim=4, activation=True),
            "periodic": PeriodicEncoding(3, 6, 0.3, 4)}


def _inputs(n, seed):
    rng = np.random.default_rng(seed)
    return torch.tensor(rng.uniform(-5, 30, (n, 3)), dtype=torch.float32)


@pytest.mark.parametrize("name", ["ple", "periodic"])
def test_torch_export_parity(name):
    module = _modules()[name].eval()
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    program = torch.export.export(module, (_inputs(8, 0),), dynamic_shapes={"x": {0: batch}})
    for n in (1, 37):
        x = _inputs(n, n)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(x), module(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["ple", "periodic"])
def test_onnx_export_parity(name, tmp_path):
    module = _modules()[name].eval()
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(module, (_inputs(8, 0),), str(path), dynamo=True, input_names=["x"],
                      dynamic_shapes={"x": {0: batch}}, verbose=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 37, 5000):
        x = _inputs(n, n)
        (got,) = session.run(None, {"x": x.numpy()})
        with torch.no_grad():
            want = module(x).numpy()
        assert got.shape == (n, module.output_dim)
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)


@pytest.mark.parametrize("build, message", [
    (lambda: PiecewiseLinearEncoding([], dim=2), "at least one feature"),
    (lambda: PiecewiseLinearEncoding([[1.0]], dim=2), "feature 0: needs at least 2"),
    (lambda: PiecewiseLinearEncoding([[0.0, 1.0], [1.0, 1.0]], dim=2), "feature 1: .*strictly"),
    (lambda: PiecewiseLinearEncoding([[0.0, np.nan]], dim=2), "NaN"),
    (lambda: PiecewiseLinearEncoding([[0.0, 1.0]], dim=0), "dim must be"),
    (lambda: PeriodicEncoding(2, 0, 1.0, 2), "num_frequencies must be"),
    (lambda: PeriodicEncoding(2, 2, 0.0, 2), "sigma must be"),
    (lambda: quantile_edges(np.zeros(3), 2), r"\[N, F\]"),
])
def test_invalid_arguments_raise(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_module_imports_no_ray_mlflow_or_pipelines():
    code = ("import sys, recmtl.modules.numeric; "
            "bad = [m for m in ('ray', 'mlflow', 'pipelines') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
