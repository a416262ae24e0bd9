"""torchrec's TrainPipelineSparseDist on 2 gloo ranks trains exactly what the plain step
trains: same batches, same order of updates, so the same weights."""


import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from recmtl.models.builder import build_model
from recmtl.train.checkpoint import load_unsharded, save_sharded
from recmtl.train.loop import EpochHooks, StepPlan, run_epoch
from recmtl.train.sharding import shard_model
from recmtl.train.worker import train_readers
from tests.ports import free_port

STEPS = 7


def _worker(rank, world, port, cfg, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    for mode in ("plain", "pipelined"):
        dmp, opt, _ = shard_model(build_model(cfg, embedding_device="meta"), cfg.train,
                                  torch.device("cpu"), tables=cfg.features.tables)
        reader, _ = train_readers(cfg, rank, world)
        logged: list[list[float]] = []
        plan = StepPlan(cfg.tasks, torch.device("cpu"), pipelined=mode == "pipelined")
        hooks = EpochHooks(on_log=lambda s, losses, r, out=logged: out.append(losses))
        stats = run_epoch(dmp, opt, reader.epoch(0), plan, STEPS, hooks)
        assert stats.steps == STEPS
        torch.save(logged, f"{out}/losses-{mode}-{rank}.pt")
        save_sharded(f"{out}/{mode}", dmp, opt)
        with torch.no_grad():  # plain forwards work again after the pipeline detached
            batch = next(iter(reader.epoch(1)))
            dmp(batch.dense, batch.sparse)
    dist.destroy_process_group()


def test_pipelined_training_equals_the_plain_step(smoke_cfg, tmp_path):
    mp.spawn(_worker, args=(2, free_port(), smoke_cfg, str(tmp_path)), nprocs=2)
    plain = dict(load_unsharded(smoke_cfg, tmp_path / "plain").named_parameters())
    piped = dict(load_unsharded(smoke_cfg, tmp_path / "pipelined").named_parameters())
    fresh = dict(build_model(smoke_cfg).named_parameters())
    assert any(not torch.equal(plain[n], fresh[n]) for n in plain if n.startswith("embeddings"))
    for name, value in plain.items():
        torch.testing.assert_close(piped[name], value, rtol=0, atol=1e-6, msg=name)
    for rank in range(2):
        a = torch.load(tmp_path / f"losses-plain-{rank}.pt")
        b = torch.load(tmp_path / f"losses-pipelined-{rank}.pt")
        torch.testing.assert_close(torch.tensor(b), torch.tensor(a), rtol=0, atol=1e-6)
