"""Basic CNN on your own images: any folder in a layout flaxcnn knows, given on the command line.

    python -m flaxcnn.train --config=configs/folder_cnn.py --workdir=runs/mine \\
        --config.dataset.folder=~/data/my_images

Layouts (found on their own): split folders (train/, val/, test/ in any usual spelling), one
folder of class folders (validation and test carved), a label file
(``--config.dataset.labels=labels.csv``), or explicit split folders
(``--config.dataset.splits.train=...``). Channels come from the data: grayscale when every image
is. Imbalanced classes: ``--config.input.class_balance=weighted_loss`` or ``oversample``.
"""

import ml_collections

from flaxcnn.config import default_config


def get_config() -> ml_collections.ConfigDict:
    """basic_cnn at 64x64, Adam lr 0.001, batch 64, 20 epochs, flips."""
    config = default_config()
    config.model = 'basic_cnn'
    config.dataset.name = 'image_folder'
    config.dataset.folder = ''  # required (or dataset.labels): where the images are
    config.dataset.labels = ''  # a .csv/.tsv/.txt of path,label[,split]; '' = folders
    config.dataset.path_column = ''  # header names; '' = path/image/filename/file/...
    config.dataset.label_column = ''  # '' = label/class/category/target
    config.dataset.split_column = ''  # '' = split/subset/set/fold, if present
    config.dataset.splits = ml_collections.ConfigDict(
        {'train': '', 'validation': '', 'test': ''}  # folder names under dataset.folder
    )
    config.dataset.image_size = 64
    config.dataset.channels = 0  # 0 = from the data: 1 when every image is grayscale, else 3
    config.dataset.resize = 'crop'
    config.dataset.validation_fraction = 0.1  # carved from train when there is no validation
    config.dataset.min_validation_per_class = 10
    config.dataset.test_fraction = 0.1  # carved from train when there is no test split
    config.dataset.positive_class = ''  # binary metrics; '' = named like positive, else minority
    config.input.flip = True
    config.batch_size = 64
    config.eval_batch_size = 256
    config.num_epochs = 20  # Adam at lr 0.001: default_config's
    return config
