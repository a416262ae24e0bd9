"""Ray Train worker loop, torchrec sharding, checkpoints, MLflow (side effects live here)."""
