"""PyTorch references for the weight-import tests: torchvision, and the MIT HAN Lab ProxylessNAS.

Import this module only after ``pytest.importorskip('torch')``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import OrderedDict

import torch
import torch.library
from torch import nn


@contextlib.contextmanager
def _fake_registrations_of_missing_ops_skipped():
    """``torch.library.register_fake`` that skips operators which do not exist.

    PyPI's torchvision wheel is built against CUDA PyTorch: with the CPU PyTorch wheel its C
    extension (``torchvision._C``, which links ``libc10_cuda.so``) fails to load, so its ops
    (``torchvision::nms`` ...) are never defined, and ``import torchvision`` then fails where
    ``torchvision/_meta_registrations.py`` registers fake (meta) kernels for them. The model code
    (``torchvision.models``) needs neither: skipping those registrations lets torchvision import,
    and only its detection ops (nms, roi_align...) stay unavailable. Where the extension loads,
    every operator exists and nothing is skipped.
    """
    register_fake = torch.library.register_fake

    def tolerant(op, *args, **kwargs):
        if isinstance(op, str):
            namespace, name = op.split('::')
            if not hasattr(getattr(torch.ops, namespace), name.split('.')[0]):
                return args[0] if args else (lambda fake: fake)
        return register_fake(op, *args, **kwargs)

    torch.library.register_fake = tolerant
    try:
        yield
    finally:
        torch.library.register_fake = register_fake


def import_torchvision():
    """``torchvision``, importable with the CPU PyTorch wheel (see the context manager above)."""
    with _fake_registrations_of_missing_ops_skipped(), warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='Failed to load', category=UserWarning)
        import torchvision
    return torchvision


def randomize_batch_norms(model: nn.Module, seed: int, bias_std: float = 0.3) -> None:
    """Random BN scale, bias and running statistics, so that a wrong mapping of any shows
    (a large ``bias_std`` drives activations past ReLU6's cap)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                size = module.num_features
                module.weight.copy_(0.5 + torch.rand(size, generator=generator))
                module.bias.copy_(bias_std * torch.randn(size, generator=generator))
                module.running_mean.copy_(0.3 * torch.randn(size, generator=generator))
                module.running_var.copy_(0.5 + 1.5 * torch.rand(size, generator=generator))


# --------------------------------------------------------------------- MIT HAN Lab ProxylessNAS
# The module tree of mit-han-lab/proxylessnas (proxyless_nas/nas_modules.py, layers.py) reduced
# to what proxyless_gpu uses, with the same module names so that its state dict has the keys of
# their hub file. ConvLayer / MBInvertedConvLayer / LinearLayer order conv -> bn -> act.

# proxyless_gpu's blocks in the order of their net config's block list: (out channels, kernel,
# expansion, stride), or None for a searched "skip" (a ZeroLayer block: no weights).
PROXYLESS_GPU_BLOCKS = (
    (24, 3, 1, 1),
    (32, 5, 3, 2), None, None, None,
    (56, 7, 3, 2), None, None, (56, 3, 3, 1),
    (112, 7, 6, 2), None, None, (112, 5, 3, 1),
    (128, 5, 6, 1), None, (128, 3, 3, 1), (128, 5, 3, 1),
    (256, 7, 6, 2), (256, 7, 6, 1), (256, 7, 6, 1), (256, 5, 6, 1),
    (432, 7, 6, 1),
)  # fmt: skip


def _conv_bn(conv: nn.Conv2d, act: bool) -> nn.Sequential:
    parts = [('conv', conv), ('bn', nn.BatchNorm2d(conv.out_channels))]
    return nn.Sequential(OrderedDict(parts + ([('relu', nn.ReLU6())] if act else [])))


class ConvLayer(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1):
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.activation = nn.ReLU6()

    def forward(self, x):
        return self.activation(self.bn(self.conv(x)))


class MBInvertedConvLayer(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride, expand_ratio):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.inverted_bottleneck = (
            _conv_bn(nn.Conv2d(in_channels, hidden, 1, bias=False), act=True)
            if expand_ratio > 1
            else None
        )
        self.depth_conv = _conv_bn(
            nn.Conv2d(
                hidden, hidden, kernel_size, stride, kernel_size // 2, groups=hidden, bias=False
            ),
            act=True,
        )
        self.point_linear = _conv_bn(nn.Conv2d(hidden, out_channels, 1, bias=False), act=False)

    def forward(self, x):
        if self.inverted_bottleneck is not None:
            x = self.inverted_bottleneck(x)
        return self.point_linear(self.depth_conv(x))


class ZeroLayer(nn.Module):
    """A searched "skip": the block's output is its shortcut, the input."""


class MobileInvertedResidualBlock(nn.Module):
    def __init__(self, mobile_inverted_conv, shortcut: bool):
        super().__init__()
        self.mobile_inverted_conv = mobile_inverted_conv
        self.shortcut = nn.Identity() if shortcut else None  # their IdentityLayer: no weights

    def forward(self, x):
        if isinstance(self.mobile_inverted_conv, ZeroLayer):
            return x
        y = self.mobile_inverted_conv(x)
        return y if self.shortcut is None else y + self.shortcut(x)


class LinearLayer(nn.Module):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x):
        return self.linear(x)


class ProxylessNASNets(nn.Module):
    """proxyless_gpu as their ``ProxylessNASNets.build_from_config`` builds it (BN eps 1e-3)."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.first_conv = ConvLayer(3, 40, 3, 2)
        blocks, channels = [], 40
        for spec in PROXYLESS_GPU_BLOCKS:
            if spec is None:
                blocks.append(MobileInvertedResidualBlock(ZeroLayer(), shortcut=True))
                continue
            out_channels, kernel, expand, stride = spec
            conv = MBInvertedConvLayer(channels, out_channels, kernel, stride, expand)
            residual = stride == 1 and channels == out_channels
            blocks.append(MobileInvertedResidualBlock(conv, shortcut=residual))
            channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.feature_mix_layer = ConvLayer(channels, 1728, 1)
        self.global_avg_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = LinearLayer(1728, num_classes)
        for module in self.modules():  # their set_bn_param(momentum=0.1, eps=1e-3)
            if isinstance(module, nn.BatchNorm2d):
                module.eps = 1e-3

    def forward(self, x):
        x = self.first_conv(x)
        for block in self.blocks:
            x = block(x)
        x = self.global_avg_pooling(self.feature_mix_layer(x))
        return self.classifier(x.flatten(1))
