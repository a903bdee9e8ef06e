"""PyTorch twins of flaxcnn's models, for the train-step reference benchmark.

Same layers, sizes, padding (``k // 2``), BatchNorm (momentum 0.1, eps 1e-5; 1e-3 for
proxylessnas_gpu), dropout rates and Kaiming-normal fan_out conv init as ``flaxcnn.models``;
no conv bias except in basic_cnn. Linear layers are initialised as flaxcnn's (truncated LeCun
normal, or Xavier-uniform in basic_cnn; zero bias). Submodules carry flaxcnn's attribute
names, so ``load_flaxcnn_state`` can copy a flaxcnn model's weights into its twin and
``check`` can compare their outputs. Tensors are NCHW, so the flatten heads (mynet_*,
basic_cnn) flatten in (C, H, W) order, PyTorch's usual, instead of flaxcnn's (H, W, C): the
same layer up to a fixed permutation of its input rows (``flatten_order='hwc'`` flattens as
flaxcnn does; the output check uses it).

PyTorch is an optional benchmark dependency (``pip install -e '.[bench]'``); the library and
its tests never import this module.

Parameter counts next to flaxcnn's (they must be equal) and an output check (flaxcnn's
weights copied in, eval and train mode logits compared)::

    .venv/bin/python benchmarks/torch_models.py
    .venv/bin/python benchmarks/torch_models.py --model mynet_v2 --num-classes 52 \\
        --in-channels 1 --image-size 90
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

# --------------------------------------------------------------------------- layers


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int | None = None) -> int:
    """PyTorch's floor formula; padding defaults to ``kernel // 2``."""
    if padding is None:
        padding = kernel // 2
    return (size + 2 * padding - kernel) // stride + 1


def conv(
    cin: int, cout: int, kernel: int, stride: int = 1, *, groups: int = 1, bias: bool = False
) -> nn.Conv2d:
    """Square conv with padding ``kernel // 2``, Kaiming-normal fan_out init, zero bias."""
    layer = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=bias)
    nn.init.kaiming_normal_(layer.weight, mode='fan_out', nonlinearity='relu')
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


def batch_norm(features: int, eps: float = 1e-5) -> nn.BatchNorm2d:
    """BatchNorm2d with scale 1, bias 0, momentum 0.1."""
    return nn.BatchNorm2d(features, eps=eps, momentum=0.1)


def linear(cin: int, cout: int, *, xavier: bool = False) -> nn.Linear:
    """Linear, zero bias; kernel Flax's default (truncated LeCun normal) or Xavier-uniform."""
    layer = nn.Linear(cin, cout)
    if xavier:
        nn.init.xavier_uniform_(layer.weight)
    else:  # variance_scaling(1, fan_in, truncated_normal): stddev corrected for the truncation
        std = math.sqrt(1.0 / cin) / 0.87962566103423978
        nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
    nn.init.zeros_(layer.bias)
    return layer


def dropout(rate: float) -> nn.Module:
    return nn.Dropout(rate) if rate else nn.Identity()


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


class ConvBN(nn.Module):
    """Conv (no bias) -> BatchNorm, no activation."""

    def __init__(self, cin, cout, kernel, stride=1, *, groups=1, eps=1e-5):
        super().__init__()
        self.conv = conv(cin, cout, kernel, stride, groups=groups)
        self.bn = batch_norm(cout, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class Stem(nn.Module):
    """conv 7x7/2 -> BN -> ReLU -> max-pool 3x3/2 pad 1."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv_bn = ConvBN(cin, cout, 7, 2)
        self.pool = nn.MaxPool2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.conv_bn(x)))

    @staticmethod
    def output_size(size: int) -> int:
        return conv_output_size(conv_output_size(size, 7, 2), 3, 2, 1)


class FlattenHead(nn.Module):
    """Base of the flatten-head models: ``flatten_order`` 'chw' (PyTorch) or 'hwc' (flaxcnn)."""

    flatten_order = 'chw'

    def flatten(self, x: torch.Tensor) -> torch.Tensor:
        if self.flatten_order == 'hwc':
            x = x.permute(0, 2, 3, 1)
        return torch.flatten(x, 1)


# --------------------------------------------------------------------------- mynet


class DownsampleStage(nn.Module):
    """[conv 3x3/2 -> BN] + [conv 1x1/2 -> BN] -> ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.main = ConvBN(cin, cout, 3, 2)
        self.shortcut = ConvBN(cin, cout, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.main(x) + self.shortcut(x))


class MyNet(FlattenHead):
    """Stem -> downsample stages -> flatten -> dropout -> linear."""

    def __init__(self, *, num_classes, in_channels, widths, dropout_rate, image_size):
        super().__init__()
        self.stem = Stem(in_channels, widths[0])
        self.stages = nn.ModuleList(
            DownsampleStage(cin, cout) for cin, cout in itertools.pairwise(widths)
        )
        height, width = (Stem.output_size(s) for s in _pair(image_size))
        for _ in self.stages:
            height, width = conv_output_size(height, 3, 2), conv_output_size(width, 3, 2)
        self.dropout = dropout(dropout_rate)
        self.head = linear(height * width * widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(self.dropout(self.flatten(x)))


def mynet_v1(*, num_classes, in_channels, image_size=90):
    return MyNet(
        num_classes=num_classes,
        in_channels=in_channels,
        widths=(64, 128),
        dropout_rate=0.0,
        image_size=image_size,
    )


def mynet_v2(*, num_classes, in_channels, image_size=90):
    return MyNet(
        num_classes=num_classes,
        in_channels=in_channels,
        widths=(32, 64, 128),
        dropout_rate=0.4,
        image_size=image_size,
    )


# --------------------------------------------------------------------------- resnet_lite


class BasicBlock(nn.Module):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN, + (1x1 + BN projection | identity), ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv_bn1 = ConvBN(cin, cout, 3, stride)
        self.conv_bn2 = ConvBN(cout, cout, 3, 1)
        self.shortcut = ConvBN(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.shortcut is None else self.shortcut(x)
        y = self.conv_bn2(torch.relu(self.conv_bn1(x)))
        return torch.relu(y + residual)


class ResNetLite(nn.Module):
    """Stem -> stride-1 BasicBlock stages -> global average pool -> linear."""

    def __init__(self, *, num_classes, in_channels, blocks_per_stage, widths=(64, 128, 256)):
        super().__init__()
        self.stem = Stem(in_channels, widths[0])
        blocks = []
        for cin, cout in itertools.pairwise(widths):
            blocks.append(BasicBlock(cin, cout))
            blocks.extend(BasicBlock(cout, cout) for _ in range(blocks_per_stage - 1))
        self.blocks = nn.ModuleList(blocks)
        self.head = linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(dim=(2, 3)))


def resnet_lite_11(*, num_classes, in_channels, image_size=90):
    del image_size
    return ResNetLite(num_classes=num_classes, in_channels=in_channels, blocks_per_stage=1)


def resnet_lite_22(*, num_classes, in_channels, image_size=90):
    del image_size
    return ResNetLite(num_classes=num_classes, in_channels=in_channels, blocks_per_stage=2)


# --------------------------------------------------------------------------- basic_cnn


class ConvReluPool(nn.Module):
    """conv 3x3/1 pad 1 with bias -> ReLU -> max-pool 2x2/2."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = conv(cin, cout, 3, bias=True)
        self.pool = nn.MaxPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.conv(x)))


class BasicCNN(FlattenHead):
    """4 x ConvReluPool -> flatten -> Linear 625 -> ReLU -> dropout 0.5 -> Linear."""

    def __init__(self, *, num_classes, in_channels, image_size=100, widths=(16, 32, 64, 128)):
        super().__init__()
        self.blocks = nn.ModuleList(
            ConvReluPool(cin, cout) for cin, cout in zip((in_channels, *widths[:-1]), widths)
        )
        height, width = _pair(image_size)
        for _ in widths:
            height, width = height // 2, width // 2
        self.hidden = linear(height * width * widths[-1], 625, xavier=True)
        self.dropout = dropout(0.5)
        self.head = linear(625, num_classes, xavier=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        x = torch.relu(self.hidden(self.flatten(x)))
        return self.head(self.dropout(x))


def basic_cnn(*, num_classes, in_channels, image_size=100):
    return BasicCNN(num_classes=num_classes, in_channels=in_channels, image_size=image_size)


# --------------------------------------------------------------------------- resnet50


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: 1x1 -> 3x3 (stride here) -> 1x1 (x4), projection when needed."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        cout = width * self.expansion
        self.conv_bn1 = ConvBN(cin, width, 1)
        self.conv_bn2 = ConvBN(width, width, 3, stride)
        self.conv_bn3 = ConvBN(width, cout, 1)
        self.shortcut = ConvBN(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.shortcut is None else self.shortcut(x)
        y = torch.relu(self.conv_bn1(x))
        y = torch.relu(self.conv_bn2(y))
        return torch.relu(self.conv_bn3(y) + residual)


class ResNet50(nn.Module):
    """torchvision's resnet50 (v1.5), written out: stem, [3, 4, 6, 3] bottlenecks, GAP, fc."""

    def __init__(self, *, num_classes, in_channels, blocks_per_stage=(3, 4, 6, 3)):
        super().__init__()
        self.stem = Stem(in_channels, 64)
        blocks = []
        cin = 64
        for stage, depth in enumerate(blocks_per_stage):
            width = 64 * 2**stage
            for index in range(depth):
                blocks.append(Bottleneck(cin, width, 2 if stage > 0 and index == 0 else 1))
                cin = width * Bottleneck.expansion
        self.blocks = nn.ModuleList(blocks)
        self.head = linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(dim=(2, 3)))


def resnet50(*, num_classes, in_channels, image_size=224):
    del image_size
    return ResNet50(num_classes=num_classes, in_channels=in_channels)


# --------------------------------------------------------------------------- proxylessnas_gpu

PROXYLESS_BN_EPS = 1e-3

# (out channels, first stride, slots); a slot is (kernel, expand) or None for a skipped block.
PROXYLESSNAS_GPU_STAGES = (
    (32, 2, ((5, 3), None, None, None)),
    (56, 2, ((7, 3), None, None, (3, 3))),
    (112, 2, ((7, 6), None, None, (5, 3))),
    (128, 1, ((5, 6), None, (3, 3), (5, 3))),
    (256, 2, ((7, 6), (7, 6), (7, 6), (5, 6))),
    (432, 1, ((7, 6),)),
)


class ConvBNReLU6(nn.Module):
    """Conv (no bias) -> BN (eps 1e-3) -> ReLU6."""

    def __init__(self, cin, cout, kernel, stride=1, *, groups=1):
        super().__init__()
        self.conv_bn = ConvBN(cin, cout, kernel, stride, groups=groups, eps=PROXYLESS_BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.relu6(self.conv_bn(x))


class MBConv(nn.Module):
    """[1x1 expand -> BN -> ReLU6] -> kxk depthwise -> BN -> ReLU6 -> 1x1 project -> BN (+ x)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.expand = ConvBNReLU6(cin, hidden, 1) if expand != 1 else None
        self.depthwise = ConvBNReLU6(hidden, hidden, kernel, stride, groups=hidden)
        self.project = ConvBN(hidden, cout, 1, eps=PROXYLESS_BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.expand is None else self.expand(x)
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


class ProxylessNASGPU(nn.Module):
    """Stem 3x3/2 -> MBConv k3 e1 -> the searched stages -> 1x1 conv 1728 -> GAP -> linear."""

    def __init__(self, *, num_classes, in_channels):
        super().__init__()
        self.stem = ConvBNReLU6(in_channels, 40, 3, 2)
        blocks = [MBConv(40, 24, 3, 1, 1)]
        cin = 24
        for cout, stride, slots in PROXYLESSNAS_GPU_STAGES:
            for index, slot in enumerate(slots):
                if slot is not None:  # a skipped slot is the identity: no block
                    kernel, expand = slot
                    blocks.append(MBConv(cin, cout, kernel, stride if index == 0 else 1, expand))
                    cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.head_conv = ConvBNReLU6(cin, 1728, 1)
        self.head = linear(1728, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(self.head_conv(x).mean(dim=(2, 3)))


def proxylessnas_gpu(*, num_classes, in_channels, image_size=224):
    del image_size
    return ProxylessNASGPU(num_classes=num_classes, in_channels=in_channels)


# --------------------------------------------------------------------------- registry

MODELS: dict[str, Callable[..., nn.Module]] = {
    'mynet_v1': mynet_v1,
    'mynet_v2': mynet_v2,
    'resnet_lite_11': resnet_lite_11,
    'resnet_lite_22': resnet_lite_22,
    'basic_cnn': basic_cnn,
    'resnet50': resnet50,
    'proxylessnas_gpu': proxylessnas_gpu,
}

# The specs' counts: name -> ((num_classes, in_channels, image_size), trainable parameters).
EXPECTED_PARAMS = {
    'mynet_v1': ((52, 1, 90), 1_044_212),
    'mynet_v2': ((52, 1, 90), 344_468),
    'resnet_lite_11': ((52, 1, 90), 1_165_812),
    'resnet_lite_22': ((52, 1, 90), 2_641_908),
    'basic_cnn': ((131, 3, 100), 3_060_071),
    'resnet50': ((1000, 3, 224), 25_557_032),
    'proxylessnas_gpu': ((1000, 3, 224), 7_119_848),
}


def create_model(
    name: str, *, num_classes: int, in_channels: int, image_size: int | Sequence[int]
) -> nn.Module:
    """The PyTorch twin of flaxcnn model ``name``."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise ValueError(f'no PyTorch twin for {name!r}; have: {", ".join(MODELS)}') from None
    return factory(num_classes=num_classes, in_channels=in_channels, image_size=image_size)


def count_params(model: nn.Module) -> int:
    """Trainable scalars (BatchNorm running statistics are buffers, as flaxcnn's BatchStat)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------- checks against flaxcnn


def _flaxcnn_model(name, *, num_classes, in_channels, image_size, abstract=False):
    from flax import nnx

    from flaxcnn import models

    if name not in models.model_names():
        return None

    def make():
        return models.create_model(
            name,
            num_classes=num_classes,
            in_channels=in_channels,
            image_size=image_size,
            rngs=nnx.Rngs(0),
        )

    return nnx.eval_shape(make) if abstract else make()


def flaxcnn_param_count(
    name: str, *, num_classes: int, in_channels: int, image_size: int
) -> int | None:
    """flaxcnn's count (abstract evaluation, no compute), or None if flaxcnn lacks the model."""
    from flaxcnn import models

    model = _flaxcnn_model(
        name,
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        abstract=True,
    )
    return None if model is None else models.count_params(model)


_BN_NAMES = {'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean', 'var': 'running_var'}


def load_flaxcnn_state(torch_model: nn.Module, flax_model) -> None:
    """Copies every Param and BatchStat of ``flax_model`` into its PyTorch twin, by path.

    Conv kernels HWIO -> OIHW, linear kernels transposed. Flatten heads must use
    ``flatten_order='hwc'`` to read the copied weights as flaxcnn does.
    """
    from flax import nnx

    targets = dict(torch_model.named_parameters()) | dict(torch_model.named_buffers())
    modules = dict(torch_model.named_modules())
    seen = set()
    leaves = [
        item
        for kind in (nnx.Param, nnx.BatchStat)
        for item in nnx.to_flat_state(nnx.state(flax_model, kind))
    ]
    for path, leaf in leaves:
        owner, field = '.'.join(str(p) for p in path[:-1]), path[-1]
        module = modules.get(owner)
        if isinstance(module, nn.BatchNorm2d):
            name = _BN_NAMES[field]
        elif field == 'kernel':
            name = 'weight'
        else:
            name = field
        key = f'{owner}.{name}'
        if key not in targets:
            raise KeyError(f'flaxcnn {"/".join(map(str, path))} has no PyTorch twin {key}')
        value = np.asarray(leaf.get_value())
        if isinstance(module, nn.Conv2d) and field == 'kernel':
            value = value.transpose(3, 2, 0, 1)
        elif isinstance(module, nn.Linear) and field == 'kernel':
            value = value.T
        target = targets[key]
        if tuple(target.shape) != value.shape:
            raise ValueError(f'{key}: flaxcnn {value.shape} vs PyTorch {tuple(target.shape)}')
        with torch.no_grad():
            target.copy_(torch.from_numpy(np.array(value, order='C')))
        seen.add(key)
    missing = [k for k in targets if k not in seen and not k.endswith('num_batches_tracked')]
    if missing:
        raise KeyError(f'PyTorch tensors without a flaxcnn counterpart: {missing}')


def check_outputs(
    name: str,
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    batch_size: int = 8,
    seed: int = 0,
) -> dict[str, float] | None:
    """Max |difference| / max |value| of flaxcnn vs the twin with flaxcnn's weights copied in.

    'eval': logits in inference mode (running statistics). For models without active dropout
    also 'train': logits in train mode (batch statistics), and 'running_mean' /
    'running_var': the running statistics after that step. None if flaxcnn lacks the model.
    """
    from flax import nnx

    flax_model = _flaxcnn_model(
        name, num_classes=num_classes, in_channels=in_channels, image_size=image_size
    )
    if flax_model is None:
        return None
    torch_model = create_model(
        name, num_classes=num_classes, in_channels=in_channels, image_size=image_size
    )
    torch_model.flatten_order = 'hwc'
    load_flaxcnn_state(torch_model, flax_model)
    images = np.random.default_rng(seed).normal(
        size=(batch_size, image_size, image_size, in_channels)
    )
    images = images.astype(np.float32)
    x_torch = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))

    def rel(a, b, floor=1e-12):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), floor))

    forward = nnx.jit(lambda model, x: model(x))  # eager NNX is slow for the large models
    result = {}
    flax_model.eval()
    torch_model.eval()
    with torch.no_grad():
        result['eval'] = rel(torch_model(x_torch).numpy(), forward(flax_model, images))
    has_dropout = any(isinstance(m, nn.Dropout) for m in torch_model.modules())
    if not has_dropout:
        flax_model.train()
        torch_model.train()
        with torch.no_grad():
            out_torch = torch_model(x_torch).numpy()
        result['train'] = rel(out_torch, forward(flax_model, images))
        buffers = dict(torch_model.named_buffers())
        diffs = {'mean': 0.0, 'var': 0.0}
        for path, stat in nnx.to_flat_state(nnx.state(flax_model, nnx.BatchStat)):
            key = '.'.join(map(str, path[:-1])) + '.' + _BN_NAMES[path[-1]]
            # Running means start at 0: a near-zero layer is compared in absolute terms.
            diff = rel(buffers[key].numpy(), stat.get_value(), floor=1e-2)
            diffs[path[-1]] = max(diffs[path[-1]], diff)
        result['running_mean'] = diffs['mean']
        # Not gated: PyTorch updates running_var with the unbiased batch variance, Flax with
        # the biased one; they differ by a factor n / (n - 1), n = batch * height * width.
        result['running_var'] = diffs['var']
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description='PyTorch twins vs flaxcnn: params and outputs.')
    parser.add_argument('--model', action='append', help='default: every model')
    parser.add_argument('--num-classes', type=int)
    parser.add_argument('--in-channels', type=int)
    parser.add_argument('--image-size', type=int)
    parser.add_argument(
        '--check-image-size', type=int, default=64, help='image size of the output check'
    )
    parser.add_argument('--no-output-check', action='store_true')
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    ok = True
    print(
        f'{"model":<17} {"(K, C, S)":<15} {"PyTorch":>11} {"flaxcnn":>11} {"spec":>11}'
        '  max rel. diff: logits eval / train, running mean / var'
    )
    for name in args.model or list(MODELS):
        (k, c, s), spec = EXPECTED_PARAMS[name]
        k, c, s = args.num_classes or k, args.in_channels or c, args.image_size or s
        spec = spec if (k, c, s) == EXPECTED_PARAMS[name][0] else None
        torch_count = count_params(create_model(name, num_classes=k, in_channels=c, image_size=s))
        flax_count = flaxcnn_param_count(name, num_classes=k, in_channels=c, image_size=s)
        good = flax_count in (None, torch_count) and spec in (None, torch_count)
        check = ''
        if not args.no_output_check:
            diffs = check_outputs(
                name, num_classes=k, in_channels=c, image_size=args.check_image_size
            )
            if diffs is not None:
                check = '  ' + ' / '.join(f'{v:.1e}' for v in diffs.values())
                if 'train' not in diffs:
                    check += ' (dropout: eval only)'
                good &= max(v for k, v in diffs.items() if k != 'running_var') < 1e-4
        ok &= good
        print(
            f'{name:<17} {f"({k}, {c}, {s})":<15} {torch_count:>11,} '
            f'{"(missing)" if flax_count is None else f"{flax_count:,}":>11} '
            f'{"" if spec is None else f"{spec:,}":>11}{check}{"" if good else "  MISMATCH"}'
        )
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
