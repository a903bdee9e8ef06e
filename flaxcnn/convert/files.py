"""Reading a PyTorch weights file into ``{key: numpy array}``, without executing any of its code.

``.safetensors`` files are read with the ``safetensors`` package's numpy API (no PyTorch).
``.pth``/``.pt``/``.bin`` files need PyTorch, imported only here and only when such a file is
given; they are loaded with ``weights_only=True``, so a file holding a pickled model object is
refused rather than executed. Checkpoints that wrap the state dict (``{'state_dict': ...}``,
as the MIT HAN Lab and timm's training scripts write them) are unwrapped, and the ``module.``
prefix of ``DataParallel`` saves is dropped.
"""

from __future__ import annotations

import hashlib
import pathlib
import pickle
import re

import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy: bf16 .safetensors files load)
import numpy as np

SAFETENSORS_SUFFIXES = ('.safetensors',)
TORCH_SUFFIXES = ('.pth', '.pt', '.bin', '.tar', '.ckpt')


class WeightsError(ValueError):
    """A weights file or folder that cannot be used, with what to do about it."""


def sha256(path: str | pathlib.Path) -> str:
    """Hex SHA-256 of the file's bytes."""
    with open(path, 'rb') as f:
        return hashlib.file_digest(f, 'sha256').hexdigest()


def read_state_dict(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """The tensors of a ``.safetensors`` or PyTorch state-dict file, as numpy arrays by key."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise WeightsError(f'{path}: no such file.')
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        tensors = _read_safetensors(path)
    elif suffix in TORCH_SUFFIXES:
        tensors = _read_torch(path)
    else:
        raise WeightsError(
            f'{path}: unknown weights format {suffix!r}; expected a .safetensors file or a '
            f'PyTorch state dict ({", ".join(TORCH_SUFFIXES)}).'
        )
    return _strip_data_parallel_prefix(tensors)


def _read_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except SafetensorError as e:
        raise WeightsError(
            f'{path}: not a readable .safetensors file ({e}); it may be truncated (an '
            'interrupted download or copy): fetch or copy it again.'
        ) from None


def _read_torch(path: pathlib.Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise WeightsError(
            f'{path}: reading a PyTorch file needs PyTorch, which is not installed. Install it '
            '(the CPU wheel is enough: pip install torch), or save the weights as .safetensors '
            "where PyTorch is (safetensors.torch.save_file(model.state_dict(), 'w.safetensors'))."
        ) from None
    try:
        loaded = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        if 'Unsupported global' not in str(e):
            raise _damaged(path, e) from None
        found = re.search(r'GLOBAL ([\w.]+)', str(e))
        raise WeightsError(
            f'{path}: holds a pickled Python object'
            f'{f" ({found.group(1)})" if found else ""}, e.g. a whole model saved with '
            'torch.save(model), not a state dict; flaxcnn does not run pickled code. Where the '
            "model's code is importable, save its weights with torch.save(model.state_dict(), "
            "'weights.pth') and import that file."
        ) from None
    except Exception as e:  # torch raises RuntimeError, EOFError, IndexError... on bad bytes
        raise _damaged(path, e) from None
    return _tensors_of(path, loaded, torch)


def _damaged(path: pathlib.Path, cause: Exception) -> WeightsError:
    return WeightsError(
        f'{path}: not a readable PyTorch file ({type(cause).__name__}: '
        f'{str(cause).splitlines()[0] if str(cause) else "no detail"}); it may be truncated '
        '(an interrupted download or copy): fetch or copy it again.'
    )


def _tensors_of(path: pathlib.Path, loaded, torch) -> dict[str, np.ndarray]:
    """The state dict inside a loaded object, as float32 (or integer) numpy arrays."""
    if isinstance(loaded, dict) and isinstance(loaded.get('state_dict'), dict):
        loaded = loaded['state_dict']
    if not isinstance(loaded, dict) or not loaded:
        raise WeightsError(
            f'{path}: holds a {type(loaded).__name__}, not a state dict (a mapping of parameter '
            "names to tensors); save one with torch.save(model.state_dict(), 'weights.pth')."
        )
    others = [key for key, value in loaded.items() if not isinstance(value, torch.Tensor)]
    if others:
        raise WeightsError(
            f'{path}: not a state dict: the entries {others[:5]} are not tensors; save the '
            "weights alone with torch.save(model.state_dict(), 'weights.pth')."
        )
    return {
        key: (value.float() if value.is_floating_point() else value).cpu().numpy()
        for key, value in loaded.items()
    }


def _strip_data_parallel_prefix(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    prefix = 'module.'
    if tensors and all(key.startswith(prefix) for key in tensors):
        return {key[len(prefix) :]: value for key, value in tensors.items()}
    return tensors
