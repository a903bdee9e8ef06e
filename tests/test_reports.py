"""Per-class metrics, confusion-matrix reports, and the evaluate and sizes commands."""

import json
import resource
import shutil
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx

from flaxcnn import checkpoint, distributed, evaluation, optim, sizes, steps
from flaxcnn.data import datasets

from helpers import REPO, command_env


def test_class_metrics_from_a_confusion_matrix():
    confusion = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]])  # rows: true, columns: predicted
    m = evaluation.class_metrics(confusion, ['a', 'b', 'c'])
    assert m['accuracy'] == pytest.approx(11 / 14)
    assert m['per_class']['a'] == {'precision': pytest.approx(8 / 9), 'recall': 0.8, 'support': 10}
    assert m['per_class']['b']['recall'] == pytest.approx(0.75)
    assert m['per_class']['b']['precision'] == pytest.approx(0.6)
    assert m['macro_recall'] == pytest.approx((0.8 + 0.75) / 2)  # classes without support skipped
    assert m['per_class']['c'] == {'precision': 0.0, 'recall': 0.0, 'support': 0}


def test_write_report_writes_json_and_png(tmp_path):
    m = evaluation.class_metrics(np.array([[3, 1], [0, 4]]), ['NORMAL', 'PNEUMONIA'])
    evaluation.write_report(m, tmp_path / 'eval', 'test')
    assert json.loads((tmp_path / 'eval' / 'test.json').read_text())['confusion'] == [
        [3, 1],
        [0, 4],
    ]
    assert (tmp_path / 'eval' / 'test.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert not list((tmp_path / 'eval').glob('*.tmp'))


def test_a_report_that_cannot_be_written_names_the_file_and_keeps_the_old_one(tmp_path):
    small = evaluation.class_metrics(np.array([[3, 1], [0, 4]]), ['NORMAL', 'PNEUMONIA'])
    evaluation.write_report(small, tmp_path / 'eval', 'valid')
    kept = (tmp_path / 'eval' / 'valid.json').read_bytes()
    names = [f'class_{i}' for i in range(60)]  # a JSON report far above the limit below
    large = evaluation.class_metrics(np.eye(60, dtype=int), names)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))  # Python ignores SIGXFSZ
    try:
        with pytest.raises(
            OSError,
            match=f'Writing the report {tmp_path / "eval" / "valid.json"} failed .*File too large',
        ):
            evaluation.write_report(large, tmp_path / 'eval', 'valid')
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert (tmp_path / 'eval' / 'valid.json').read_bytes() == kept
    assert not list((tmp_path / 'eval').glob('*.tmp'))


def test_training_writes_validation_and_test_reports(smoke_run):
    test = json.loads((smoke_run / 'eval' / 'test.json').read_text())
    summary = json.loads((smoke_run / 'summary.json').read_text())
    assert test['accuracy'] == pytest.approx(summary['test_accuracy'])
    assert len(test['class_names']) == 52
    assert np.sum(test['confusion']) == 52 * 2  # every test image once
    assert (smoke_run / 'eval' / 'validation.png').exists()


def test_evaluate_command_reproduces_the_summary(smoke_run, tmp_path):
    run = shutil.copytree(smoke_run, tmp_path / 'run')  # it rewrites the run's reports
    out = subprocess.run(
        [sys.executable, '-m', 'flaxcnn.evaluate', f'--workdir={run}'],
        cwd=REPO,
        env=command_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((smoke_run / 'summary.json').read_text())
    assert f'accuracy {summary["test_accuracy"]:.2%}' in out.stdout


def test_loading_a_workdir_without_a_run_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=f'No checkpoint in {tmp_path}'):
        checkpoint.load_run(tmp_path)


def test_load_run_restores_the_model_without_optimizer_state(smoke_run, data_dir, monkeypatch):
    requested = []
    restore = checkpoint.ocp.CheckpointManager.restore

    def spy(self, step, args=None, **kwargs):
        requested.append(set(args.state.item) if 'state' in args.keys() else None)
        return restore(self, step, args=args, **kwargs)

    def no_optimizer(config):
        raise AssertionError('load_run built an optimizer')

    monkeypatch.setattr(checkpoint.ocp.CheckpointManager, 'restore', spy)
    monkeypatch.setattr(optim, 'create_optimizer', no_optimizer)
    run = checkpoint.load_run(smoke_run)
    assert requested == [None, {'params', 'batch_stats'}]  # the metadata, then the variables
    monkeypatch.undo()
    summary = json.loads((smoke_run / 'summary.json').read_text())
    assert run.step == summary['best_step'] and run.config.model == 'mynet_v2'
    assert run.config.dataset.data_dir == str(data_dir)  # the command-line override, saved
    assert len(run.class_names) == 52 and run.meta['image_shape'] == [32, 32, 1]

    # The same logits as the trained state restored whole, as the training loop restores it.
    model = checkpoint.create_model(run.meta, rngs=nnx.Rngs(1))
    _, eval_graphdef, state = steps.create_train_state(
        model, optim.create_optimizer(run.config), seed=0
    )
    ckpts = checkpoint.Checkpoints(smoke_run)
    state, _ = ckpts.restore(run.step, state)
    ckpts.close()
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 1), np.uint8)
    trained = steps.make_forward(eval_graphdef, mean=run.meta['mean'], std=run.meta['std'])
    np.testing.assert_array_equal(
        run.forward(run.variables, images), trained(steps.inference_variables(state), images)
    )


def test_sizes_row_and_chart(smoke_run, tmp_path):
    row = sizes.run_sizes(smoke_run)
    summary = json.loads((smoke_run / 'summary.json').read_text())
    assert row['model'] == 'mynet_v2' and row['params'] == summary['num_params']
    assert row['param_mb'] == pytest.approx(row['params'] * 4 / 2**20)
    # Adam keeps two moments per parameter: the full state is about three times the model.
    assert 2.0 < row['checkpoint_full_mb'] / row['checkpoint_model_mb'] < 4.0
    assert row['test_accuracy'] == summary['test_accuracy']
    sizes._plot([row, row], str(tmp_path / 'sizes.png'))
    assert (tmp_path / 'sizes.png').stat().st_size > 1000


def test_predict_top_k_with_the_saved_class_list(smoke_run, data_dir, tmp_path):
    from PIL import Image

    from flaxcnn.data import glyph_render

    # A glyph of class 'A' as a large RGB PNG: converted like training data (gray, 32x32).
    image, label = glyph_render.render_sample(0, 'test', 10, 128)
    path = tmp_path / 'a.png'
    Image.fromarray(image).convert('RGB').save(path)
    (tmp_path / 'broken.jpg').write_bytes(b'not an image')
    out = subprocess.run(
        [
            sys.executable,
            '-m',
            'flaxcnn.predict',
            f'--workdir={smoke_run}',
            '--top_k=3',
            str(path),
            str(tmp_path / 'broken.jpg'),
        ],
        cwd=REPO,
        env=command_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 1  # one unreadable image
    assert 'broken.jpg: cannot read this image' in out.stderr
    line = out.stdout.strip().splitlines()[-1]
    assert line.startswith(f'{path}: ')
    shown = [part.rsplit(' ', 1) for part in line.split(': ', 1)[1].split(', ')]
    assert len(shown) == 3
    assert all(name in glyph_render.CLASS_NAMES for name, _ in shown)
    probs = [float(p.rstrip('%')) for _, p in shown]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 100.5


def test_predictor_converts_images_like_the_training_pipeline(smoke_run, tmp_path):
    from PIL import Image

    from flaxcnn.predict import Predictor

    run = checkpoint.load_run(smoke_run)
    dataset = datasets.load(run.config.dataset)
    mesh = distributed.create_mesh()
    evaluator = evaluation.Evaluator(run.config, dataset, run.forward, run.variables, mesh)
    test = dataset.splits['test']
    paths = []
    for i in range(8):
        paths.append(tmp_path / f'{i}.png')
        Image.fromarray(test[i]['image'][..., 0]).save(paths[-1])
    predictor = Predictor(str(smoke_run))
    probs = predictor.predict([predictor.load(str(p)) for p in paths])
    for i, path in enumerate(paths):
        np.testing.assert_array_equal(predictor.load(str(path)), test[i]['image'])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    # The same model and normalization as evaluation: the test loss agrees.
    probs = predictor.predict([test[i]['image'] for i in range(len(test))])
    labels = np.asarray([test[i]['label'] for i in range(len(test))])
    loss = -np.log(probs[np.arange(len(test)), labels]).mean()
    np.testing.assert_allclose(evaluator.run(run.model, 'test')['loss'], loss, rtol=1e-4)
