"""Parquet fragments -> ``Batch`` (KeyedJaggedTensor + dense + labels + group ids)."""
