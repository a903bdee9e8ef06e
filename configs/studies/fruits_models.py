"""Three architectures on Fruits-360, each with its source recipe: accuracy against size.

Data: the Fruits-360 folder you downloaded (it holds ``Training/`` and ``Test/``):
    python -m flaxcnn.study --study=configs/studies/fruits_models.py \\
        --study.overrides.dataset.folder=~/data/fruits-360
Report: size_vs_accuracy.png is the comparison. 3 trials of up to 20 epochs or 1800 s.
"""

import pathlib

import ml_collections

from flaxcnn.studies.spec import default_study

SGD = {'name': 'sgd', 'momentum': 0.9, 'lr': 0.001}  # the source's ResNet-50/ProxylessNAS recipe


def get_config() -> ml_collections.ConfigDict:
    """configs/fruits_cnn.py (basic_cnn, Adam lr 0.01, batch 1024) and two SGD variants."""
    study = default_study()
    study.base_config = str(pathlib.Path(__file__).parents[1] / 'fruits_cnn.py')
    study.overrides = {'dataset': {'folder': ''}}  # '' = TFDS manual_dir, as in fruits_cnn.py
    study.num_epochs = 20
    study.time_budget_s = 1800.0
    study.variants = {
        'basic_cnn': {},
        'resnet50': {
            'model': 'resnet50',
            'batch_size': 512,
            'eval_batch_size': 256,
            'optimizer': SGD,
        },
        'proxylessnas_gpu': {
            'model': 'proxylessnas_gpu',
            'batch_size': 512,
            'eval_batch_size': 256,
            'optimizer': SGD,
        },
    }
    return study
