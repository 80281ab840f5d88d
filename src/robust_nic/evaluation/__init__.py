"""Robustness evaluation: per-image measurements, runs over datasets, reports."""
