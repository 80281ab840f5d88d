"""robust-nic: adversarial robustness of learned image codecs."""

__version__ = "0.1.0"
