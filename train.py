"""Train or adversarially finetune a learned image codec: `python train.py [overrides]` (Hydra), the same
as `robust-nic train [overrides]`."""

from robust_nic.apps import train_app

if __name__ == "__main__":  # guard needed by ddp_spawn
    train_app()
