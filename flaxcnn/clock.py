"""The run's training clock: what the time budget and the time-based schedule read.

It counts the seconds of the whole run, earlier sessions included (saved with every
checkpoint and read back on resume), from the start of each session's training loop, so
start-up and compilation never count. Every process reads process 0's clock, so all of them
stop at the same step and feed the same learning rate to it.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator

from flaxcnn import distributed


class Clock:
    """Training seconds across sessions, the time budget, and the schedule's input."""

    def __init__(
        self,
        budget_s: float,
        *,
        schedule_reads_seconds: bool,
        timer: Callable[[], float] = time.perf_counter,
    ):
        """``budget_s`` of 0 is no budget; ``schedule_reads_seconds`` if the learning-rate
        schedule is a function of training seconds rather than of the step."""
        self.budget_s = budget_s
        self.schedule_reads_seconds = schedule_reads_seconds
        self.seconds = 0.0  # the run's training seconds as last recorded (what is saved)
        self.stopped_at: float | None = None  # the reading at which the budget ran out
        self._timer = timer
        self._seconds_before = 0.0
        self._session_start = timer()

    def save(self) -> dict[str, float]:
        """What a checkpoint keeps (in its metadata's ``progress``)."""
        return {'train_seconds': self.seconds}

    def load(self, saved: dict[str, float]) -> None:
        """Continues from a ``save``-d clock."""
        self.seconds = saved['train_seconds']

    def start(self) -> None:
        """Starts this session's count, on top of the recorded seconds."""
        self._seconds_before = self.seconds
        self._session_start = self._timer()
        self.stopped_at = None

    def read(self) -> float:
        """The run's training seconds now, as process 0 counts them (a collective if
        multi-host: every process must call it at the same points)."""
        return distributed.agree(self._seconds_before + self._timer() - self._session_start)

    def record(self) -> float:
        """Reads the clock into ``seconds`` (the value saved next)."""
        self.seconds = self.read()
        return self.seconds

    def out_of_time(self, now: float | None = None) -> bool:
        """Whether the budget is spent (at the reading ``now``, or at one taken here);
        remembers the reading at which it first is as ``stopped_at``."""
        if self.stopped_at is None and self.budget_s:
            now = self.read() if now is None else now
            if now >= self.budget_s:
                self.stopped_at = now
        return self.stopped_at is not None

    def before_step(self, step: int) -> float | None:
        """What the schedule reads for the next step (``step``, or the training seconds), or
        None once the budget is spent. One clock reading a step at most."""
        now = self.read() if self.schedule_reads_seconds else None
        if self.out_of_time(now):
            return None
        return step if now is None else now

    def schedule_input(self, step: int) -> float:
        """What the schedule reads at the recorded time and ``step`` (for the logged rate)."""
        return self.seconds if self.schedule_reads_seconds else step

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """Records the clock after an evaluation. Its time counts as training while the budget
        lasts; if the budget ran out, the record is where training stopped, never later than
        the evaluation's start (evaluating after the budget ran out is not training)."""
        before = self.read()
        yield
        if not self.out_of_time():
            self.seconds = self.read()
        else:
            self.seconds = min(before, self.stopped_at)
