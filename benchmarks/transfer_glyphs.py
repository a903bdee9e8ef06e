"""Transfer on glyphs: pretrain on the 36 digit and capital classes, then learn the 16 lower-case
ones from a few images per class, fine-tuned from that run or from scratch, at equal seconds.

Runs, in-process, through ``train_and_evaluate`` (the trainer's own clock: training plus the
per-epoch validation, no dataset preparation or compilation):

  pretrain   configs/glyph.py on classes digits+capitals for --pretrain-seconds
  scratch    the lower-case classes, --train-per-class images each, from a fresh model
  finetune   the same, starting from the pretrained run (new head; the body at
             --backbone-lr-scale of the learning rate)
  frozen     the same with the pretrained body frozen (the head alone learns)

each of the last three for --finetune-seconds, then prints their test accuracy (150 test images
per class) and training throughput. Every run keeps its workdir under --workdir, so a second
call with the same --workdir reuses the pretrained run (and its finished runs). Datasets are
rendered locally on first use into --data-dir.

Commands (from the repository root)::

    .venv/bin/python benchmarks/transfer_glyphs.py --workdir=runs/transfer_glyphs
    .venv/bin/python benchmarks/transfer_glyphs.py --workdir=/tmp/tg --image-size=32 \\
        --pretrain-per-class=8 --pretrain-seconds=10 --finetune-seconds=5      # smoke test
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import ml_collections

REPO = pathlib.Path(__file__).resolve().parents[1]
VARIANTS = ('scratch', 'finetune', 'frozen')


def pretrain_config(args) -> ml_collections.ConfigDict:
    """The glyph recipe on the digit and capital classes, within the pretraining budget."""
    from flaxcnn.config import from_file

    config = from_file(REPO / 'configs' / 'glyph.py')
    config.model = args.model
    config.dataset.data_dir = args.data_dir
    config.dataset.image_size = args.image_size
    config.dataset.classes = 'digits+capitals'
    config.dataset.train_per_class = args.pretrain_per_class
    config.dataset.validation_per_class = max(2, args.pretrain_per_class // 4)
    config.batch_size = min(config.batch_size, 36 * args.pretrain_per_class)
    config.time_budget_s = args.pretrain_seconds
    config.num_epochs = 10_000  # the budget ends the run
    return config


def finetune_config(args, variant: str, pretrained: pathlib.Path) -> ml_collections.ConfigDict:
    """The lower-case classes from ``--train-per-class`` images each, as ``variant`` learns."""
    config = pretrain_config(args)
    config.dataset.classes = 'lowercase'
    config.dataset.train_per_class = args.train_per_class
    config.dataset.validation_per_class = args.validation_per_class
    config.dataset.test_per_class = 150
    config.batch_size = min(64, 16 * args.train_per_class)
    config.time_budget_s = args.finetune_seconds
    config.optimizer.lr = args.lr
    if variant != 'scratch':
        config.init.source = str(pretrained)
        config.finetune.backbone_lr_scale = args.backbone_lr_scale
    if variant == 'frozen':
        config.finetune.freeze = 'backbone'
    return config


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
    """The run's summary: read back if it finished before, else trained now."""
    from flaxcnn import training

    done = workdir / 'summary.json'
    if done.exists():
        return json.loads(done.read_text())
    return training.train_and_evaluate(config, workdir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--workdir', type=pathlib.Path, required=True)
    parser.add_argument('--data-dir', default='~/.cache/flaxcnn/datasets')
    parser.add_argument('--model', default='mynet_v2', help='mynet_v2 or resnet_lite_11')
    parser.add_argument('--image-size', type=int, default=90)
    parser.add_argument('--pretrain-per-class', type=int, default=600)
    parser.add_argument('--pretrain-seconds', type=float, default=300.0)
    parser.add_argument('--train-per-class', type=int, default=20)
    parser.add_argument('--validation-per-class', type=int, default=30)
    parser.add_argument('--finetune-seconds', type=float, default=60.0)
    parser.add_argument('--lr', type=float, default=0.002)
    parser.add_argument('--backbone-lr-scale', type=float, default=0.1)
    parser.add_argument('--json', action='store_true', help='print the rows as JSON too')
    args = parser.parse_args(argv)

    pretrained = args.workdir / 'pretrain'
    source = run(pretrain_config(args), pretrained)
    rows = []
    for variant in VARIANTS:
        s = run(finetune_config(args, variant, pretrained), args.workdir / variant)
        rows.append({
            'variant': variant, 'test_accuracy': s['test_accuracy'],
            'best_valid_accuracy': s['best_valid_accuracy'], 'train_seconds': s['train_seconds'],
            'steps': s['steps'], 'images_per_second': s['images_per_second'],
        })  # fmt: skip

    print(
        f'\n{args.model} at {args.image_size} px, pretrained on 36 classes x '
        f'{args.pretrain_per_class} for {source["train_seconds"]:.0f} s (test '
        f'{source["test_accuracy"]:.2%}); 16 lower-case classes x {args.train_per_class} images, '
        f'{args.finetune_seconds:.0f} s each:\n'
    )
    print('| start | test accuracy | best valid | train s | steps | img/s |')
    print('|---|---|---|---|---|---|')
    for r in rows:
        print(
            f'| {r["variant"]} | {r["test_accuracy"]:.2%} | {r["best_valid_accuracy"]:.2%} | '
            f'{r["train_seconds"]:.0f} | {r["steps"]} | {r["images_per_second"]:,.0f} |'
        )
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()


if __name__ == '__main__':
    main()
