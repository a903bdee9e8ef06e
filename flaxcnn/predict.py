"""Top-k classes of images from a run's best checkpoint.

    python -m flaxcnn.predict --workdir=DIR [--top_k=5] [--threshold=auto|0.3] IMAGE...

Images of any size or mode are converted as the run's training data was (channels, resize
policy, center crop, normalization), using the class list saved with the checkpoint. For two
classes ``--threshold`` also decides each image: positive when the positive class's
probability is at least the threshold; ``auto`` is the one chosen on validation (Youden's J)
when the run was tested, read from ``<workdir>/eval/test.json``.
"""

from __future__ import annotations

import json
import pathlib
import sys

import jax
import numpy as np
from absl import app, flags

from flaxcnn import checkpoint, cli, ops
from flaxcnn.data import folders, pipeline

_WORKDIR = cli.define_once(
    'workdir',
    lambda: flags.DEFINE_string('workdir', None, 'Run directory written by flaxcnn.train.'),
)
_TOP_K = flags.DEFINE_integer('top_k', 5, 'How many classes to show per image.')
_THRESHOLD = flags.DEFINE_string(
    'threshold',
    '',
    "Two classes: decide with this probability of the positive class; 'auto' = the one chosen "
    'on validation (eval/test.json); empty = top-k only.',
)
flags.mark_flag_as_required('workdir')


def decision_threshold(workdir: str, given: str) -> tuple[str, float] | None:
    """(positive class, threshold) that ``--threshold=given`` asks for, or None for ''."""
    if not given:
        return None
    report = pathlib.Path(workdir) / 'eval' / 'test.json'
    binary = json.loads(report.read_text()).get('binary') if report.exists() else None
    if binary is None:
        raise app.UsageError(
            f'--threshold needs a tested two-class run: {report} holds no binary metrics '
            '(run python -m flaxcnn.evaluate --workdir=... first).'
        )
    if given == 'auto':
        chosen = binary['at_chosen_threshold']
        if chosen is None:
            raise app.UsageError(f'{report}: no threshold was chosen (one-class validation).')
        return binary['positive_class'], chosen['threshold']
    try:
        value = float(given)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise app.UsageError(f"--threshold={given!r}: expected 'auto' or a number in [0, 1].")
    return binary['positive_class'], value


class Predictor:
    """The best checkpoint of a run, ready to classify image files."""

    def __init__(self, workdir: str):
        run = checkpoint.load_run(workdir)
        self.step, self.class_names = run.step, run.class_names
        self.stored_shape = run.meta['stored_image_shape']
        self.resize = run.config.dataset.get('resize', 'crop')
        self.center_crop = run.config.input.center_crop
        self._ops = run.config.ops
        forward, self._variables = run.forward, run.variables

        @jax.jit
        def probabilities(variables, images):
            return jax.nn.softmax(forward(variables, images))

        self._probabilities = probabilities

    def load(self, path: str) -> np.ndarray:
        """One image file as the pipeline gives it to the model: uint8, at the training size
        (raises ValueError if unreadable)."""
        height, _, channels = self.stored_shape
        image, error = folders.load_image(
            path, image_size=height, channels=channels, resize=self.resize
        )
        if image is None:
            raise ValueError(f'{path}: cannot read this image ({error}).')
        if self.center_crop:
            image = pipeline.CenterCrop(self.center_crop).map({'image': image})['image']
        return image

    def predict(self, images: list[np.ndarray]) -> np.ndarray:
        """Class probabilities, one row per ``load``-ed image."""
        with ops.use(self._ops):  # jit traces on the first call
            return np.asarray(self._probabilities(self._variables, np.stack(images)))


def main(argv) -> None:
    cli.start()
    paths = argv[1:]
    if not paths:
        raise app.UsageError(
            'Give at least one image: python -m flaxcnn.predict --workdir=DIR IMAGE...'
        )
    predictor = Predictor(_WORKDIR.value)
    decide = decision_threshold(_WORKDIR.value, _THRESHOLD.value)
    readable, images = [], []
    for path in paths:
        try:
            images.append(predictor.load(path))
            readable.append(path)
        except ValueError as e:
            print(f'error: {e}', file=sys.stderr)
    if readable:
        k = min(_TOP_K.value, len(predictor.class_names))
        for path, probs in zip(readable, predictor.predict(images), strict=True):
            top = np.argsort(-probs)[:k]
            shown = ', '.join(f'{predictor.class_names[i]} {probs[i]:.1%}' for i in top)
            if decide:
                positive, threshold = decide
                index = predictor.class_names.index(positive)
                chosen = predictor.class_names[index if probs[index] >= threshold else 1 - index]
                shown += f' -> {chosen} (threshold {threshold:.3f} on {positive})'
            print(f'{path}: {shown}')
    if len(readable) < len(paths):
        sys.exit(1)


if __name__ == '__main__':
    cli.run(main)
