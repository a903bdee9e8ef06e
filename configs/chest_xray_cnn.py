"""Basic CNN on the Kaggle chest X-ray pneumonia set (binary; NORMAL : PNEUMONIA is about 1 : 3).

Data: the Kaggle ``chest_xray`` folder (``train/``, ``val/``, ``test/``, each with ``NORMAL/`` and
``PNEUMONIA/``). Its 16-image ``val`` split is too small: a stratified 10% of train is carved.
    python -m flaxcnn.train --config=configs/chest_xray_cnn.py --config.dataset.folder=PATH
Grayscale, 128x128 (shorter side resized, center-cropped), small rotations, never flipped
(the heart is on the left). See eval/test.json for per-class recall and precision.
"""

import ml_collections

from flaxcnn.config import default_config


def get_config() -> ml_collections.ConfigDict:
    """Adam lr 0.001, batch 64, 20 epochs."""
    config = default_config()
    config.model = 'basic_cnn'
    config.dataset.name = 'chest_xray'
    config.dataset.folder = ''  # '' = TFDS manual_dir: <data_dir>/downloads/manual/chest_xray
    config.dataset.image_size = 128
    config.dataset.channels = 1
    config.dataset.resize = 'crop'
    config.dataset.validation_fraction = 0.1
    config.dataset.min_validation_per_class = 10
    config.input.rotation_degrees = 5.0
    config.input.flip = False
    config.batch_size = 64
    config.eval_batch_size = 256
    config.num_epochs = 20
    config.optimizer.name = 'adam'
    config.optimizer.lr = 0.001
    return config
