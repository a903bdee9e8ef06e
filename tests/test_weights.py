"""Import of pretrained PyTorch weights (``flaxcnn.convert``, ``python -m flaxcnn.weights``).

The mapping is proven on logits: torchvision's own ResNet-50 code and a module tree with the MIT
HAN Lab ProxylessNAS names, with random weights and random BatchNorm statistics, against the
imported flaxcnn models, with both op implementations. Then bad files, each refused with an error
that names the file and the fix, and nothing written.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from helpers import REPO
from flaxcnn import convert, ops
from flaxcnn.checkpoint import read_arrays

IMAGE_SIZE = 64  # the networks pool globally: a small image exercises every layer
NEEDS_TORCH = 'compares with PyTorch; install the test extra (torch, torchvision)'


@pytest.fixture(scope='module')
def torch():
    return pytest.importorskip('torch', reason=NEEDS_TORCH)


@pytest.fixture(scope='module')
def torch_helpers(torch):
    import torch_helpers

    return torch_helpers


@pytest.fixture(scope='module')
def torchvision(torch_helpers):
    try:
        return torch_helpers.import_torchvision()
    except ImportError:
        pytest.skip(NEEDS_TORCH)


def _images(torch, seed: int = 0):
    """Two random NCHW float images."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)


def _reference(torch, network, images) -> np.ndarray:
    network.eval()
    with torch.no_grad():
        return network(images).numpy()


@pytest.fixture(scope='module')
def resnet50_files(tmp_path_factory, torch, torch_helpers, torchvision):
    """torchvision's resnet50 (random weights and BN statistics) as .pth and .safetensors, and
    its eval-mode logits on ``_images``."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    network = torchvision.models.resnet50(weights=None)
    torch_helpers.randomize_batch_norms(network, seed=1)
    folder = tmp_path_factory.mktemp('resnet50')
    torch.save(network.state_dict(), folder / 'resnet50.pth')
    save_file(network.state_dict(), folder / 'resnet50.safetensors')
    return folder, _reference(torch, network, _images(torch))


@pytest.fixture(scope='module')
def resnet50_imported(resnet50_files, tmp_path_factory):
    folder, _ = resnet50_files
    out = tmp_path_factory.mktemp('imported') / 'resnet50'
    convert.import_weights(folder / 'resnet50.pth', model='resnet50', out=out)
    return out


@pytest.fixture(scope='module')
def resnet50_model(resnet50_imported):
    return convert.load_model(resnet50_imported)


@pytest.fixture(scope='module')
def proxyless_file(tmp_path_factory, torch, torch_helpers):
    """The MIT HAN Lab module tree of proxyless_gpu with 10 classes (random weights, BN biases
    large enough to pass ReLU6's cap), saved as their hub file is: {'state_dict': ...}."""
    torch.manual_seed(0)
    network = torch_helpers.ProxylessNASNets(num_classes=10)
    torch_helpers.randomize_batch_norms(network, seed=1, bias_std=3.0)
    path = tmp_path_factory.mktemp('proxyless') / 'proxyless_gpu.pth'
    torch.save({'state_dict': network.state_dict()}, path)
    return path, _reference(torch, network, _images(torch))


@pytest.fixture(scope='module')
def proxyless_model(proxyless_file, tmp_path_factory):
    path, _ = proxyless_file
    out = tmp_path_factory.mktemp('imported') / 'proxylessnas_gpu'
    convert.import_weights(path, model='proxylessnas_gpu', out=out)
    return convert.load_model(out)


@pytest.fixture
def implementation(request):
    previous = ops.implementation()
    ops.set_implementation(request.param)
    yield request.param
    ops.set_implementation(previous)


def _logits(model: nnx.Module, torch_images) -> np.ndarray:
    """The model's logits on NCHW torch images, traced now (so with the current ops)."""
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))
    return np.asarray(forward(state, torch_images.numpy().transpose(0, 2, 3, 1)))


def _assert_close(logits: np.ndarray, reference: np.ndarray) -> None:
    assert logits.shape == reference.shape
    assert np.abs(logits - reference).max() < 1e-4 * np.abs(reference).max()


@pytest.mark.parametrize('implementation', ['fast', 'plain'], indirect=True)
def test_resnet50_matches_torchvision_logits(resnet50_files, resnet50_model, torch, implementation):
    _, reference = resnet50_files
    model, metadata = resnet50_model
    assert metadata['num_classes'] == 1000 and metadata['source']['layout'] == 'torchvision_resnet'
    _assert_close(_logits(model, _images(torch)), reference)


def test_mit_han_lab_module_tree_is_proxyless_gpu(torch_helpers):
    network = torch_helpers.ProxylessNASNets()
    assert sum(p.numel() for p in network.parameters()) == 7_119_848  # the official count
    assert len(network.blocks) == 22  # 8 of them searched skips, without weights


@pytest.mark.parametrize('implementation', ['fast', 'plain'], indirect=True)
def test_proxylessnas_matches_mit_han_lab_logits(
    proxyless_file, proxyless_model, torch, implementation
):
    _, reference = proxyless_file
    model, metadata = proxyless_model
    assert metadata['num_classes'] == 10  # read from the file's classifier
    _assert_close(_logits(model, _images(torch)), reference)


@pytest.mark.slow  # a subprocess of the command
def test_command_imports_safetensors_without_torch(resnet50_files, resnet50_imported, tmp_path):
    folder, _ = resnet50_files
    source = folder / 'resnet50.safetensors'
    no_torch = tmp_path / 'no_torch' / 'torch'
    no_torch.mkdir(parents=True)
    hidden = "raise ModuleNotFoundError('hidden by the test', name='torch')\n"
    (no_torch / '__init__.py').write_text(hidden)
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(no_torch.parent), str(REPO)])}
    out = tmp_path / 'from_safetensors'
    done = subprocess.run(
        [sys.executable, '-m', 'flaxcnn.weights', 'import', str(source), '--model=resnet50',
         f'--out={out}', '--image_size=160'],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'resnet50, 1000 classes, 3 channels, 160 px' in done.stdout
    metadata = json.loads((out / 'weights.json').read_text())
    assert metadata['source'] == {
        'file': 'resnet50.safetensors',
        'sha256': hashlib.sha256(source.read_bytes()).hexdigest(),
        'layout': 'torchvision_resnet',
    }
    assert (metadata['image_size'], metadata['normalization']) == (160, 'imagenet')
    from_safetensors, from_pth = (read_arrays(d / 'state') for d in (out, resnet50_imported))
    jax.tree.map(np.testing.assert_array_equal, from_safetensors, from_pth)


def test_training_checkpoints_are_unwrapped(tmp_path, torch):
    """timm's and the MIT HAN Lab's training scripts save {'state_dict': ...}, DataParallel
    prefixes ``module.``; bf16 tensors arrive as float32."""
    path = tmp_path / 'checkpoint.pth.tar'
    weight = torch.arange(4.0).to(torch.bfloat16)
    torch.save({'state_dict': {'module.fc.weight': weight}, 'epoch': 3}, path)
    tensors = convert.files.read_state_dict(path)
    assert list(tensors) == ['fc.weight'] and tensors['fc.weight'].dtype == np.float32
    np.testing.assert_array_equal(tensors['fc.weight'], [0, 1, 2, 3])


# ------------------------------------------------------------------------------------ bad input


def _refused(source, model: str, out, *fragments: str) -> None:
    """Importing ``source`` fails with an error naming it and saying ``fragments``; nothing is
    written, not even a temporary folder."""
    with pytest.raises(convert.WeightsError) as error:
        convert.import_weights(source, model=model, out=out)
    message = str(error.value)
    assert str(source) in message
    for fragment in fragments:
        assert fragment in message
    assert not [
        p.name for p in out.parent.iterdir() if p.name.startswith((out.name, f'.{out.name}.'))
    ]


def test_weights_of_another_architecture_are_refused(proxyless_file, tmp_path, torch, torchvision):
    path, _ = proxyless_file
    _refused(path, 'resnet50', tmp_path / 'out', 'has no fc.weight', '--model=proxylessnas_gpu')
    resnet18 = tmp_path / 'resnet18.pth'
    torch.save(torchvision.models.resnet18().state_dict(), resnet18)
    _refused(
        resnet18,
        'resnet50',
        tmp_path / 'out',
        "does not match flaxcnn's resnet50",
        'layer1.0.conv1.weight: shape (64, 64, 3, 3), expected (64, 64, 1, 1)',
        '24 wrong shapes, 165 missing and 0 unexpected keys',
        '... and',
        'another architecture',
    )


def test_missing_and_unexpected_keys_are_listed(proxyless_file, tmp_path):
    from safetensors.numpy import save_file

    path, _ = proxyless_file
    tensors = convert.files.read_state_dict(path)
    del tensors['blocks.8.mobile_inverted_conv.depth_conv.bn.running_var']
    tensors['blocks.8.mobile_inverted_conv.se.weight'] = np.zeros((4, 4), np.float32)
    edited = tmp_path / 'edited.safetensors'
    save_file(tensors, edited)
    _refused(
        edited,
        'proxylessnas_gpu',
        tmp_path / 'out',
        '0 wrong shapes, 1 missing and 1 unexpected keys',
        'missing blocks.8.mobile_inverted_conv.depth_conv.bn.running_var (expected shape (168,))',
        'unexpected blocks.8.mobile_inverted_conv.se.weight (shape (4, 4))',
    )


def test_truncated_files_are_refused(resnet50_files, tmp_path):
    folder, _ = resnet50_files
    for name in ('resnet50.pth', 'resnet50.safetensors'):
        truncated = tmp_path / name
        data = (folder / name).read_bytes()
        truncated.write_bytes(data[: len(data) // 2])
        _refused(truncated, 'resnet50', tmp_path / 'out', 'may be truncated', 'again')


def test_pickled_model_and_other_objects_are_refused(tmp_path, torch):
    whole = tmp_path / 'whole_model.pth'
    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 2)), whole)
    _refused(
        whole,
        'resnet50',
        tmp_path / 'out',
        'holds a pickled Python object (torch.nn.modules.container.Sequential)',
        'torch.save(model.state_dict()',
    )
    listed = tmp_path / 'list.pth'
    torch.save([torch.zeros(2)], listed)
    _refused(listed, 'resnet50', tmp_path / 'out', 'holds a list, not a state dict')


def test_pth_without_torch_says_how_to_install_it(tmp_path, monkeypatch):
    source = tmp_path / 'weights.pth'
    source.write_bytes(b'not read')
    monkeypatch.setitem(sys.modules, 'torch', None)  # makes `import torch` raise ImportError
    _refused(source, 'resnet50', tmp_path / 'out', 'needs PyTorch', 'pip install torch')


def test_unknown_format_model_or_existing_output_are_refused(tmp_path):
    source = tmp_path / 'weights.npz'
    source.write_bytes(b'')
    _refused(source, 'resnet50', tmp_path / 'out', "unknown weights format '.npz'")
    with pytest.raises(convert.WeightsError, match="layout for model 'mynet_v2'"):
        convert.import_weights(source, model='mynet_v2', out=tmp_path / 'out')
    (tmp_path / 'taken').mkdir()
    with pytest.raises(convert.WeightsError, match='already exists'):
        convert.import_weights(source, model='resnet50', out=tmp_path / 'taken')
