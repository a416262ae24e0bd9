"""Offline metrics: exact AUC, logloss."""
