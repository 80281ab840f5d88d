"""robust-nic: adversarial robustness of learned image codecs."""

__version__ = "0.3.0"
