"""ResNet-50 fine-tuned on the chest X-ray pneumonia set from ImageNet weights: 224x224, the
weights' own size, and grayscale, so the RGB stem is summed over its input channels.

Weights: as in fruits_resnet50_finetune.py:
    python -m flaxcnn.train --config=configs/chest_xray_resnet50_finetune.py \\
        --config.dataset.folder=PATH --config.init.source=weights/resnet50
Normalization: the dataset's statistics (ImageNet's are per RGB channel; the images are gray).
"""

import pathlib

import ml_collections

from flaxcnn.config import from_file


def get_config() -> ml_collections.ConfigDict:
    """chest_xray_resnet50.py at lr 0.003 for the new 2-class head, 0.1x for the body after
    50 head-only steps, 5 epochs."""
    config = from_file(pathlib.Path(__file__).with_name('chest_xray_resnet50.py'))
    config.input.normalization = 'dataset'
    config.num_epochs = 5
    config.optimizer.lr = 0.003
    config.schedule.name = 'cosine'
    config.schedule.warmup_epochs = 0.0
    config.finetune.backbone_lr_scale = 0.1
    config.finetune.head_warmup_steps = 50
    return config
