#!/usr/bin/env bash
# The GPU run of issue #17 as one prepared script (docs/gpu.md). It generates the standard and
# the large workload and measures each with `pipelines.bench.training`: one process (torchrec
# DMP, fused TBE) and one Ray Train worker, on the device given.
#   on the lent GPU, after the carried packages are unpacked into /tmp/site:
#     PYTHONPATH=/tmp/site:$PWD OUT=$OUT bash pipelines/gpu/run.sh cuda
#   here, first, the same steps shrunk to a few minutes of CPU:
#     bash pipelines/gpu/run.sh cpu
# Prints each bench's lines and writes their JSON (and versions.txt) under ${OUT:-runs/gpu}.
set -euo pipefail
device=${1:-cuda}
out=${OUT:-runs/gpu}
py=${PYTHON:-python3}
data=${DATA:-/tmp/recmtl-gpu-data}
mkdir -p "$out" "$data"

"$py" - <<'PY' | tee "$out/versions.txt"
import importlib.metadata as md, platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "gpus", torch.cuda.device_count(),
      *(f"{p} {md.version(p)}" for p in ("fbgemm-gpu", "fbgemm-gpu-cpu", "torchrec", "ray")
        if any(d.metadata["Name"] == p for d in md.distributions())))
if torch.cuda.is_available():
    import fbgemm_gpu  # noqa: F401  (its CUDA kernels: DMP needs them)
    print("device", torch.cuda.get_device_name(0))
PY

if [ "$device" = cpu ]; then
  standard_rows=(synthetic.train_rows=40000 synthetic.valid_rows=4000 synthetic.test_rows=4000
                 synthetic.rows_per_file=20000 synthetic.row_group_size=8192)
  large_rows=(synthetic.train_rows=40000 synthetic.valid_rows=4000 synthetic.test_rows=4000
              synthetic.rows_per_file=20000 synthetic.row_group_size=8192)
  steps=(--steps 4) ; large_steps=(--steps 3)
else
  standard_rows=() ; large_rows=()
  steps=(--steps 200) ; large_steps=(--steps 300)
fi

run() {  # name config [overrides...]: generate the store once, then measure
  local name=$1 config=$2 ; shift 2
  local store="$data/$name"
  if [ ! -f "$store/.generated" ]; then
    "$py" -m pipelines.cli generate "$config" data.root="$store" "$@"
    touch "$store/.generated"
  fi
  local bench_steps=("${steps[@]}")
  [ "$name" = large ] && bench_steps=("${large_steps[@]}")
  "$py" -m pipelines.bench.training "$config" data.root="$store" train.device="$device" "$@" \
    "${bench_steps[@]}" --ranks '' --ray-workers 1 --data-repeats 1 --json "$out/bench-$name.json" \
    2>&1 | tee "$out/bench-$name.log"
}

run standard configs/bench/standard.yaml "${standard_rows[@]}"
run large configs/bench/large.yaml "${large_rows[@]}"
echo "gpu run done: $out"
