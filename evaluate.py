"""Evaluate a codec clean and under attack with the real entropy coder: `python evaluate.py [overrides]`, the
same as `robust-nic evaluate [overrides]`."""

from robust_nic.apps import evaluate_app

if __name__ == "__main__":  # guard needed by ddp_spawn
    evaluate_app()
