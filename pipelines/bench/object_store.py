"""The reader from object storage beside the local disk, on this machine.

    python -m pipelines.bench.object_store [CONFIG] [dotted.key=value ...] [--repeats 5]

Generates CONFIG's synthetic store (default ``configs/smoke.yaml`` at 400,000 train rows)
into a temporary directory, starts an S3-compatible server on 127.0.0.1 in its own process
(moto's server mode: the one the tests use), copies the store to a bucket, and reads the
train split with the training reader (``ParquetBatchReader``: shuffled row groups, validated
batches, ``data.prefetch`` ahead) from both, once each to warm up, then ``--repeats`` pairs
back to back. Prints rows/s of each (median), S3 / local (median of the pairs' ratios), the
bytes read and the copy time.

moto is a Python server answering one request at a time over loopback: the S3 figure is what
this reader does against a slow, near (no network latency) endpoint, not a figure for AWS S3.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from pipelines.bench.harness import bench_parser, interleave, parse, print_table, run_bench, write_results
from pipelines.synthetic.store import generate
from recmtl.config import Config, derive, load_config
from recmtl.data.reader import ParquetBatchReader
from recmtl.data.schema import FeatureSchema
from recmtl.storage import upload_dir

BUCKET = "recmtl-bench"
DEFAULTS = ("synthetic.train_rows=400000", "synthetic.valid_rows=1000",
            "synthetic.test_rows=1000", "synthetic.rows_per_file=100000")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 server in a child process on a free loopback port; yields its endpoint."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("moto's server exited at start (is moto[s3] installed?)") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def rows_per_s(uri: str, cfg: Config) -> float:
    reader = ParquetBatchReader(uri, FeatureSchema.from_config(cfg), cfg.data.batch_size,
                                shuffle=cfg.data.shuffle, seed=cfg.seed, prefetch=cfg.data.prefetch)
    t0 = time.perf_counter()
    rows = sum(b.size for b in reader.epoch(0))
    return rows / (time.perf_counter() - t0)


def bench(cfg: Config, repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="recmtl-bench-s3-") as tmp:
        cfg = derive(cfg, {"data.root": tmp})
        generate(cfg)
        size = sum(p.stat().st_size for p in (Path(tmp) / "train").rglob("*.parquet"))
        with s3_server() as endpoint:
            # Made-up credentials for the local server, in this process's environment only.
            os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                               "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1",
                               "AWS_EC2_METADATA_DISABLED": "true"})
            urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT"),
                                   timeout=30).close()
            t0 = time.perf_counter()
            upload_dir(Path(tmp) / "train", f"s3://{BUCKET}/store/train")
            copy_s = time.perf_counter() - t0
            uris = {"local": f"{tmp}/train", "s3": f"s3://{BUCKET}/store/train"}
            # one read each to warm up (imports, page cache, connections), then pairs back to
            # back: the machine's load moves slowly
            turns = interleave({k: partial(rows_per_s, uri, cfg) for k, uri in uris.items()},
                               "local", repeats, warmup=1)
    print(f"train split: {cfg.synthetic.train_rows:,} rows, {size / 2**20:.1f} MiB of Parquet; "
          f"copied to S3 in {copy_s:.1f} s")
    names = {"local": "local disk", "s3": "S3 (moto)"}
    print_table([{"reader": names[k], "rows/s (median)": turns.median(k),
                  "x local (median of pairs)": turns.ratio(k) if k != "local" else None,
                  "runs": ", ".join(f"{v:,.0f}" for v in turns.runs[k])} for k in uris],
                {"rows/s (median)": ",.0f", "x local (median of pairs)": ".2f"})
    return {"local_rows_per_s": turns.median("local"), "s3_rows_per_s": turns.median("s3"),
            "ratio": turns.ratio("s3"), "rows_per_s": turns.summary(), "mib": size / 2**20,
            "copy_s": copy_s}


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("object_store", __doc__, config="optional",
                          default_config="configs/smoke.yaml", repeats=5,
                          repeats_help="pairs of reads, local then S3")
    args = parse(parser, argv)
    return run_bench(lambda: write_results(
        args, bench(load_config(args.config, [*DEFAULTS, *args.overrides]), args.repeats)))


if __name__ == "__main__":
    sys.exit(main())
