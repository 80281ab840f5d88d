"""robust-nic: adversarial robustness of learned image codecs."""

import warnings

__version__ = "0.3.0"

# CompressAI 1.2.8 scripts a helper with torch.jit.script at import, which torch 2.14 deprecates: two lines of
# noise before every message (nothing for a user to act on). Only that warning is hidden.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
