"""Imported at start-up by a flaxcnn command a test starts (``helpers.command_env``): PyTorch
looks uninstalled, as it is where a user installs flaxcnn without the ``test`` extra."""

import importlib.abc
import sys


class _NoTorch(importlib.abc.MetaPathFinder):
    """Finds ``torch`` nowhere, so ``import torch`` raises ImportError (and nothing puts a
    placeholder in ``sys.modules`` that libraries probing for torch would trip over)."""

    def find_spec(self, name, path=None, target=None):
        if name == 'torch' or name.startswith('torch.'):
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return None


sys.meta_path.insert(0, _NoTorch())
