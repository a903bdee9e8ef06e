"""Top-k classes of images from a run's best checkpoint.

    python -m flaxcnn.predict --workdir=DIR [--top_k=5] IMAGE...

Images of any size or mode are converted as the run's training data was (channels, resize
policy, center crop, normalization), using the class list saved with the checkpoint.
"""

from __future__ import annotations

import sys

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging
from flax import nnx

from flaxcnn import checkpoint, models, ops, optim, steps
from flaxcnn.data import augment, folders

_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory written by flaxcnn.train.')
_TOP_K = flags.DEFINE_integer('top_k', 5, 'How many classes to show per image.')
flags.mark_flag_as_required('workdir')


class Predictor:
    """The best checkpoint of a run, ready to classify image files."""

    def __init__(self, workdir: str):
        ckpts = checkpoint.Checkpoints(workdir)
        step = ckpts.best_step()
        if step is None:
            raise FileNotFoundError(f'No checkpoint in {ckpts.directory}: is {workdir} a run?')
        meta = ckpts.read_meta(step)
        config = ml_collections.ConfigDict(meta['config'])
        self.class_names = meta['class_names']
        self.stored_shape = meta['stored_image_shape']
        self.input_shape = meta['image_shape']
        self.resize = config.dataset.get('resize', 'crop')
        self.center_crop = config.input.center_crop
        ops.set_implementation(config.ops)
        model = models.create_model(
            meta['model'],
            num_classes=len(self.class_names),
            in_channels=self.input_shape[-1],
            image_size=self.input_shape[0],
            rngs=nnx.Rngs(0),
            **meta['model_kwargs'],
        )
        _, eval_graphdef, state = steps.create_train_state(
            model, optim.create_optimizer(config), config.seed
        )
        state, _ = ckpts.restore(step, state)
        ckpts.close()
        self.step = step

        @jax.jit
        def probabilities(images):
            model = nnx.merge(eval_graphdef, state.params, state.batch_stats)
            logits = model(steps.normalize(images, meta['mean'], meta['std']))
            return jax.nn.softmax(logits)

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
            image = augment.CenterCrop(self.center_crop).map({'image': image})['image']
        return image

    def predict(self, images: list[np.ndarray]) -> np.ndarray:
        """Class probabilities, one row per ``load``-ed image."""
        return np.asarray(self._probabilities(np.stack(images)))


def main(argv) -> None:
    paths = argv[1:]
    if not paths:
        raise app.UsageError(
            'Give at least one image: python -m flaxcnn.predict --workdir=DIR IMAGE...'
        )
    if not flags.FLAGS['verbosity'].present:
        logging.set_verbosity(logging.WARNING)
    predictor = Predictor(_WORKDIR.value)
    readable, images = [], []
    for path in paths:
        try:
            images.append(predictor.load(path))
            readable.append(path)
        except ValueError as e:
            print(e, file=sys.stderr)
    if readable:
        k = min(_TOP_K.value, len(predictor.class_names))
        for path, probs in zip(readable, predictor.predict(images), strict=True):
            top = np.argsort(-probs)[:k]
            shown = ', '.join(f'{predictor.class_names[i]} {probs[i]:.1%}' for i in top)
            print(f'{path}: {shown}')
    if len(readable) < len(paths):
        sys.exit(1)


if __name__ == '__main__':
    app.run(main)
