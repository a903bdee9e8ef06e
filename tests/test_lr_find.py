"""The learning-rate range test: an exponential ramp that stops when the loss blows up, a plot,
a suggestion, and no checkpoint."""

import subprocess
import sys

import numpy as np
import pytest
from absl import app

from flaxcnn import lr_find

from helpers import REPO


def test_the_rate_ramps_exponentially_and_the_test_stops_when_the_loss_blows_up(smoke_config):
    result = lr_find.range_test(smoke_config, min_lr=1e-4, max_lr=1e3, num_steps=40)
    assert 3 < len(result.rates) < 40  # Adam at rates near 1000 diverges before the end
    assert result.smoothed[-1] > 4 * min(result.smoothed)  # the stop rule, not a NaN
    np.testing.assert_allclose(result.rates[0], 1e-4, rtol=1e-5)
    np.testing.assert_allclose(np.diff(np.log(result.rates)), np.log(1e7) / 39, rtol=1e-4)
    assert len(result.losses) == len(result.smoothed) == len(result.rates)
    lowest = int(np.argmin(result.smoothed))
    assert result.suggestion == pytest.approx(result.rates[lowest] / 10)
    assert min(result.smoothed) < result.smoothed[0]  # the loss fell before it blew up


def test_impossible_ranges_are_refused_before_any_work(smoke_config):
    with pytest.raises(app.UsageError, match='0 < --min_lr < --max_lr'):
        lr_find.range_test(smoke_config, min_lr=1.0, max_lr=0.1)


@pytest.mark.slow
def test_the_command_plots_and_prints_the_suggestion_and_saves_no_checkpoint(tmp_path, data_dir):
    out = subprocess.run(
        [
            sys.executable,
            '-m',
            'flaxcnn.lr_find',
            '--config=configs/glyph_smoke.py',
            f'--workdir={tmp_path / "run"}',
            f'--config.dataset.data_dir={data_dir}',
            '--steps=12',
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'Suggested learning rate: ' in out.stdout
    assert [p.name for p in (tmp_path / 'run').iterdir()] == [lr_find.PLOT_NAME]
    assert (tmp_path / 'run' / lr_find.PLOT_NAME).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
