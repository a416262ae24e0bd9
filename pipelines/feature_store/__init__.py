"""Raw feature-store exports, the synthetic store and Census-Income -> training Parquet."""
