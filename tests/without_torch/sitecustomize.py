"""Imported at start-up by a flaxcnn command a test starts (``helpers.command_env``): PyTorch
looks uninstalled, as it is where a user installs flaxcnn without the ``test`` extra."""

import sys

sys.modules['torch'] = None  # `import torch` raises ImportError
