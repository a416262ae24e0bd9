"""Offline metrics on numpy arrays: exact AUC and GAUC, logloss, calibration, bootstrap
intervals, curves, slices, run comparison, and the report that gathers them."""
