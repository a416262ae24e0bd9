from pathlib import Path

import pytest

from recmtl.config import ConfigError, flatten, load_config

CONFIGS = sorted(Path("configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p) for p in CONFIGS])
def test_every_config_file_loads(path):
    cfg = load_config(path)
    assert cfg.tasks and cfg.features.sparse


def test_overrides_are_typed_and_nested():
    cfg = load_config("configs/demo.yaml", ["train.epochs=3", "data.shuffle=false",
                                            "train.dense_lr=1e-3", "mlflow.tracking_uri=x"])
    assert (cfg.train.epochs, cfg.data.shuffle, cfg.train.dense_lr) == (3, False, 1e-3)
    assert cfg.mlflow.tracking_uri == "x"


def _write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(Path("configs/demo.yaml").read_text() + text)
    return p


def test_unknown_key_names_key_and_file(tmp_path):
    p = _write(tmp_path, "\nbogus_section: 1\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*unknown key\(s\) \['bogus_section'\]"):
        load_config(p)


def test_unknown_nested_key_via_override():
    with pytest.raises(ConfigError, match=r"key 'train'.*unknown key\(s\) \['epochz'\]"):
        load_config("configs/demo.yaml", ["train.epochz=2"])


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match=r"key 'train.epochs': expected int, got 'two'"):
        load_config("configs/demo.yaml", ["train.epochs=two"])


def test_bool_is_not_an_int():
    with pytest.raises(ConfigError, match="train.num_workers"):
        load_config("configs/demo.yaml", ["train.num_workers=true"])


def test_cross_references_are_checked(tmp_path):
    p = _write(tmp_path, "")
    text = p.read_text().replace("product_of: [ctr, cvr]", "product_of: [ctr, nope]")
    p.write_text(text)
    with pytest.raises(ConfigError, match=r"tasks.ctcvr.product_of: 'nope'"):
        load_config(p)
    text = Path("configs/demo.yaml").read_text().replace("table: slot}", "table: slots}")
    p.write_text(text)
    with pytest.raises(ConfigError, match=r"features.sparse.slot.table: unknown table 'slots'"):
        load_config(p)


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        load_config("configs/demo.yaml", ["train.epochs"])


def test_to_dict_round_trips_and_flattens():
    cfg = load_config("configs/demo.yaml")
    flat = flatten(cfg.to_dict())
    assert flat["train.num_workers"] == cfg.train.num_workers
    assert flat["model.expert_layers"] == list(cfg.model.expert_layers)


def test_base_merges_mappings_and_replaces_the_rest(tmp_path):
    (tmp_path / "a.yaml").write_text(Path("configs/smoke.yaml").read_text())
    (tmp_path / "b.yaml").write_text(
        "base: a.yaml\nname: b\nmodel: {arch: ple, expert_layers: [4]}\n")
    cfg = load_config(tmp_path / "b.yaml")
    smoke = load_config("configs/smoke.yaml")
    assert cfg.name == "b" and cfg.model.arch == "ple" and cfg.model.expert_layers == (4,)
    assert cfg.model.tower_layers == smoke.model.tower_layers  # kept from the base
    assert cfg.features == smoke.features


def test_base_cycle_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")


@pytest.mark.parametrize("overrides, message", [
    (["model.arch=moe"], r"key 'model.arch': expected one of \('shared_bottom', 'mmoe', "
                         r"'ple', 'home', 'adatt', 'sparse_moe', 'multitab', 'dtrn', 'infnet'\), got 'moe'"),
    (["model.arch=sparse_moe", "model.num_experts=2", "model.moe_top_k=3"],
     r"model.moe_top_k: 3 must be in \[1, model.num_experts = 2\]"),
    (["model.arch=sparse_moe", "model.moe_capacity_factor=0"], "model.moe_capacity_factor: 0.0"),
    (["model.arch=sparse_moe", "model.moe_balance_weight=-0.1"], "model.moe_balance_weight"),
    (["model.arch=multitab", "model.multitab_dim=30", "model.multitab_heads=4"],
     "model.multitab_heads: 4 must divide model.multitab_dim = 30"),
    (["model.arch=multitab", "model.multitab_layers=0"], "multitab_layers"),
    (["model.arch=dtrn", "model.dtrn.rank=0"], "model.dtrn: task_dim and rank must be >= 1"),
    (["model.arch=dtrn", "model.dtrn.se_gate=tanh"], "key 'model.dtrn.se_gate'"),
    (["model.arch=dtrn", "model.dtrn.backbone=dtrn"], "key 'model.dtrn.backbone'"),
    (["model.arch=infnet", "model.infnet.dim=30"],
     "model.infnet.num_heads: 4 must divide model.infnet.dim = 30"),
    (["model.arch=infnet", "model.infnet.num_proxies=0"], "model.infnet: dim, num_layers"),
    (["model.arch=infnet", "model.numeric_encoding=periodic"], "not for infnet"),
    (["model.gate=top1"], "key 'model.gate': expected one of .*, got 'top1'"),
    (["model.task_groups=[[ctr]]"], "task_groups: must hold every base task"),
    (["model.transfer=aitm", "tasks=[{name: ctr, label: click}]"], "aitm needs at least two"),
    (["loss.weighting=gradnorm"], "key 'loss.weighting': expected one of .*'gradnorm'"),
    (["tasks=[{name: ctr, label: click}, {name: w, label: watch, kind: regression, "
      "escm2: ips, space: click}]"], "regression task cannot be composed, use escm2"),
    (["tasks=[{name: ctr, label: click}, {name: cvr, label: conversion, escm2: dr}]"],
     "escm2: needs a base task with a space"),
    (["train.sparse_optimizer=adam"], "adam is a fused embedding optimizer on cuda only"),
    (["features.tables=[{name: user, num_embeddings: 9, dim: 4, sharding: [diagonal]}]",
      "features.sparse=[{name: u, table: user}]", "model.interaction=none"],
     r"key 'features.tables\[0\].sharding\[0\]': expected one of .*, got 'diagonal'"),
    (["train.dense_schedule={decay: step}"], "key 'train.dense_schedule.decay'"),
    (["train.pipeline=sparse_dist", "loss.weighting=pcgrad"], "pcgrad needs the plain step"),
    (["train.min_workers=3"], r"train.min_workers: 3 must be in \[1, train.num_workers = 2\]"),
    (["train.min_workers=0"], r"train.min_workers: 0 must be in"),
    (["train.placement=scatter"], r"key 'train.placement': expected one of \('pack', 'spread'\)"),
])
def test_bad_model_loss_and_training_keys_fail_before_compute(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("configs/demo.yaml", overrides)
