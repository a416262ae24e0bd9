"""``train.warm_start``: the carried optimizer state scaled (row-wise Adagrad's accumulators)
or reset (Adam's moments), checked against the state read before, on a real sharded model."""

import torch
import torch.distributed as dist
from torch.distributed._shard.sharded_tensor import ShardedTensor

from recmtl.config.schema import WarmStartConfig
from recmtl.data.reader import ParquetBatchReader
from recmtl.data.schema import FeatureSchema
from recmtl.losses import multitask_loss
from recmtl.models.builder import build_model
from recmtl.train.sharding import shard_model
from recmtl.train.warm_state import settle
from tests.ranks import run_ranks


def _sparse_state(optimizer):
    sparse = optimizer.optimizers[0][1]
    return {f"{p}.{k}": torch.cat([s.tensor.clone() for s in v.local_shards()])
            for p, per in sparse.state_dict()["state"].items() for k, v in per.items()
            if isinstance(v, ShardedTensor)}


def _dense_moments(optimizer):
    dense = optimizer.optimizers[1][1]
    return [v.clone() for per in dense.state.values() for k, v in per.items()
            if k in ("exp_avg", "exp_avg_sq", "step")]


def _run(rank, world, port, cfg, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    dmp, opt, _ = shard_model(build_model(cfg, embedding_device="meta"), cfg.train,
                              torch.device("cpu"), tables=cfg.features.tables)
    reader = ParquetBatchReader(f"{cfg.data.root}/train", FeatureSchema.from_config(cfg), 256)
    for _, batch in zip(range(3), reader.epoch(0), strict=False):
        loss, _ = multitask_loss(dmp(batch.dense, batch.sparse), batch.labels, cfg.tasks)
        opt.zero_grad()
        loss.backward()
        opt.step()
    before, moments = _sparse_state(opt), _dense_moments(opt)
    kept = settle(opt, WarmStartConfig(sparse_state_scale=1.0))
    same = _sparse_state(opt)
    done = settle(opt, WarmStartConfig(sparse_state_scale=0.25, dense_state="reset"))
    torch.save({"before": before, "moments": moments, "same": same, "kept": kept, "done": done,
                "after": _sparse_state(opt), "after_moments": _dense_moments(opt)}, out)
    dist.destroy_process_group()


def test_accumulators_scaled_and_adam_reset(smoke_cfg, tmp_path):
    out = tmp_path / "state.pt"
    run_ranks(_run, 1, smoke_cfg, out)
    got = torch.load(out)
    assert got["before"] and all(v.abs().sum() > 0 for v in got["before"].values())
    for key, value in got["before"].items():
        assert torch.equal(got["same"][key], value), key  # scale 1 keeps them bit for bit
        torch.testing.assert_close(got["after"][key], value * 0.25, rtol=0, atol=0)
    assert got["done"]["sparse_states_scaled"] == len(got["before"])
    assert any(m.abs().sum() > 0 for m in got["moments"])
    assert all(m.abs().sum() == 0 for m in got["after_moments"])
