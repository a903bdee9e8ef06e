"""Per-epoch metrics to TensorBoard event files (tensorboardX) and JSON lines."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Mapping

import tensorboardX


class MetricWriter:
    """Writes scalars to ``<workdir>/tensorboard`` and appends them to ``<workdir>/metrics.jsonl``."""

    def __init__(self, workdir: str | pathlib.Path, resume_step: int = 0):
        """Records after ``resume_step`` (left by a killed run) are dropped from the JSON lines."""
        workdir = pathlib.Path(workdir)
        path = workdir / 'metrics.jsonl'
        if path.exists():
            kept = [
                line
                for line in path.read_text(encoding='utf-8').splitlines(keepends=True)
                if line.endswith('\n') and json.loads(line)['step'] <= resume_step
            ]
            tmp = path.with_suffix('.jsonl.tmp')
            tmp.write_text(''.join(kept), encoding='utf-8')
            os.replace(tmp, path)
        self._tb = tensorboardX.SummaryWriter(
            str(workdir / 'tensorboard'), purge_step=resume_step + 1 if resume_step else None
        )
        self._jsonl = open(path, 'a', encoding='utf-8')

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        """One record: every scalar at ``step``."""
        for name, value in scalars.items():
            self._tb.add_scalar(name, value, step)
        self._jsonl.write(json.dumps({'step': step, **scalars}) + '\n')
        self._jsonl.flush()
        self._tb.flush()

    def close(self) -> None:
        """Flushes and closes both files."""
        self._tb.close()
        self._jsonl.close()
