"""ResNet-50 fine-tuned on Fruits-360 from ImageNet weights, at the dataset's 100x100 (the global
pool takes any size): the source's pretrained recipe, which these weights make practical on a CPU.

Weights: import a torchvision or timm resnet50 state dict you have once, then start from it:
    python -m flaxcnn.weights import resnet50-11ad3fa6.pth --model=resnet50 --out=weights/resnet50
    python -m flaxcnn.train --config=configs/fruits_resnet50_finetune.py \\
        --config.dataset.folder=PATH --config.init.source=weights/resnet50
Add --config.finetune.freeze=backbone to train the new 131-class head alone (much faster steps).
"""

import pathlib

import ml_collections

from flaxcnn.config import from_file


def get_config() -> ml_collections.ConfigDict:
    """SGD momentum 0.9, lr 0.01 with cosine decay for the new head, a tenth of it for the
    pretrained body after 100 head-only steps, batch 64, 5 epochs, ImageNet normalization."""
    config = from_file(pathlib.Path(__file__).with_name('fruits_resnet50.py'))
    config.input.normalization = 'imagenet'  # what the pretrained stem expects
    config.batch_size = 64
    config.num_epochs = 5
    config.optimizer.lr = 0.01
    config.schedule.name = 'cosine'
    config.finetune.backbone_lr_scale = 0.1
    config.finetune.head_warmup_steps = 100
    return config
