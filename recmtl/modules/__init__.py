"""Plain tensor modules: experts, gates, MMoE, towers. No config, Ray or MLflow here."""
