"""Config overrides (on configs/smoke.yaml) for each architecture variant and objective that
is not a plain ``model.arch`` switch; the training-loop and export tests run every one."""

OBJECTIVES = {
    "home": ["model.arch=home", "model.task_groups=[[ctr], [cvr]]"],
    "dselect_k": ["model.gate=dselect_k", "model.num_experts=5"],
    "aitm": ["tasks=[{name: ctr, label: click}, {name: ctcvr, label: conversion}]",
             "model.transfer=aitm", "loss.calibrator_weight=0.5"],
    "escm2_dr": ["tasks=[{name: ctr, label: click}, {name: cvr, label: conversion, space: click, "
                 "escm2: dr}, {name: ctcvr, label: conversion, product_of: [ctr, cvr]}]"],
    "watch_uncertainty": ["tasks=[{name: ctr, label: click}, {name: watch, label: log_watch_time, "
                          "kind: regression, space: click}]", "loss.weighting=uncertainty"],
    "pcgrad": ["loss.weighting=pcgrad"],
    "bf16_cosine": ["train.bf16=true", "train.dense_schedule={warmup_steps: 2, decay: cosine}"],
    "sparse_dist_pipeline": ["train.pipeline=sparse_dist"],
}
