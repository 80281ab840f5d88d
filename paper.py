"""The paper's experiments in one command: `python paper.py [overrides]`, the same as `robust-nic paper
[overrides]` (configuration: paper.yaml in robust_nic/conf)."""

from robust_nic.apps import paper_app

if __name__ == "__main__":  # guard needed by ddp_spawn
    paper_app()
