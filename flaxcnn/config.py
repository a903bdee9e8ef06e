"""The default experiment config every ``configs/*.py`` starts from, and config-file loading."""

from __future__ import annotations

import importlib.util
import pathlib

import ml_collections


def default_config() -> ml_collections.ConfigDict:
    """Every field the trainer reads, with defaults; experiments override what they change."""
    config = ml_collections.ConfigDict()
    config.model = 'mynet_v2'
    config.model_kwargs = ml_collections.ConfigDict()  # passed to the model factory
    config.ops = 'fast'  # 'fast' (custom_vjp conv/max-pool, same math) or 'plain' (XLA's ops)

    config.dataset = ml_collections.ConfigDict()  # read by flaxcnn.data.datasets
    config.dataset.name = 'glyphs'
    config.dataset.data_dir = '~/.cache/flaxcnn/datasets'  # prepared ArrayRecord files
    config.dataset.image_size = 90
    config.dataset.seed = 0

    config.input = ml_collections.ConfigDict()
    config.input.rotation_degrees = 0.0  # uniform in [-d, d]
    config.input.flip = False  # random left-right mirroring
    config.input.center_crop = 0  # crop stored images to this size (train and eval); 0 = none
    config.input.normalization = 'dataset'  # train split mean/std, or 'imagenet'
    config.input.num_workers = 1  # grain worker processes; 0 = in the main process
    config.input.prefetch_batches = 2

    config.batch_size = 512
    config.eval_batch_size = 1024
    config.num_epochs = 20
    config.time_budget_s = 0.0  # training wall time in seconds; 0 = no budget
    config.seed = 0

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = 'adam'  # adam | adamw | sgd
    config.optimizer.lr = 0.001
    config.optimizer.momentum = 0.9  # sgd only
    config.optimizer.nesterov = False  # sgd only
    config.optimizer.weight_decay = 0.0

    config.schedule = ml_collections.ConfigDict()
    config.schedule.name = 'constant'  # constant | piecewise | cosine | time_linear
    config.schedule.warmup_epochs = 0.0
    config.schedule.decay_epochs = (30, 60)  # piecewise only
    config.schedule.decay_factor = 0.1  # piecewise only

    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.every_steps = 50  # plus one at every epoch end; 0 = epoch ends only
    config.checkpoint.max_to_keep = 2  # latest N, kept beside the best one

    config.log_every_steps = 10

    config.distributed = ml_collections.ConfigDict()  # several processes (hosts); see README
    config.distributed.coordinator_address = ''  # host:port of process 0; '' = from the env
    config.distributed.num_processes = 0  # 0 = JAX_NUM_PROCESSES, else one process
    config.distributed.process_id = -1  # -1 = JAX_PROCESS_ID
    config.distributed.auto_detect = False  # let JAX detect SLURM / Open MPI / k8s / TPU
    return config


def from_file(path: str | pathlib.Path) -> ml_collections.ConfigDict:
    """``get_config()`` of a config file, as ``--config=path`` loads it."""
    path = pathlib.Path(path)
    spec = importlib.util.spec_from_file_location(f'flaxcnn_config_{path.stem}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()
