"""MyNet v2 on the embedded 52-class glyph set: the best model within 10 minutes.

Data: generated locally on first use (no download) into ``dataset.data_dir``.
Run: python -m flaxcnn.train --config=configs/glyph.py
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """The default glyph experiment (Adam lr 0.002, batch 512, 600 s budget)."""
    config = ml_collections.ConfigDict()
    config.model = 'mynet_v2'
    config.model_kwargs = ml_collections.ConfigDict()  # e.g. dropout=0.4, widths=(32, 64, 128)
    config.ops = 'fast'  # 'fast' (custom_vjp conv/max-pool, same math) or 'plain' (XLA's ops)

    config.dataset = ml_collections.ConfigDict()
    config.dataset.name = 'glyphs'
    config.dataset.data_dir = '~/.cache/flaxcnn/datasets'
    config.dataset.image_size = 90
    config.dataset.train_per_class = 600
    config.dataset.validation_per_class = 150
    config.dataset.test_per_class = 150
    config.dataset.seed = 0

    config.input = ml_collections.ConfigDict()
    config.input.rotation_degrees = 5.0
    config.input.num_workers = 1
    config.input.prefetch_batches = 2

    config.batch_size = 512
    config.eval_batch_size = 1024
    config.num_epochs = 100
    config.time_budget_s = 600.0  # training wall time; 0 disables the budget
    config.seed = 0

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = 'adam'
    config.optimizer.lr = 0.002
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = False
    config.optimizer.weight_decay = 0.0

    config.schedule = ml_collections.ConfigDict()
    config.schedule.name = 'time_linear'
    config.schedule.warmup_epochs = 0.0
    config.schedule.decay_epochs = (30, 60)  # 'piecewise' only
    config.schedule.decay_factor = 0.1  # 'piecewise' only

    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.every_steps = 50  # plus one at every epoch end; 0 = epoch ends only
    config.checkpoint.max_to_keep = 2  # latest N, kept beside the best one

    config.log_every_steps = 10
    return config
