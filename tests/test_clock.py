"""The training clock: seconds across sessions, the time budget, evaluation time, save and load."""

import pytest

from flaxcnn.clock import Clock


class FakeTimer:
    """A ``time.perf_counter`` the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _clock(budget_s=0.0, reads_seconds=False):
    timer = FakeTimer()
    return Clock(budget_s, schedule_reads_seconds=reads_seconds, timer=timer), timer


def test_seconds_count_from_the_session_start_on_top_of_earlier_sessions():
    clock, timer = _clock()
    clock.load({'train_seconds': 30.0})
    timer.now += 50.0  # start-up and compilation before start() never count
    clock.start()
    timer.now += 4.0
    assert clock.read() == 34.0
    assert clock.seconds == 30.0  # not recorded yet
    assert clock.record() == 34.0 and clock.seconds == 34.0


def test_save_and_load_round_trip_continues_the_count():
    clock, timer = _clock()
    clock.start()
    timer.now += 7.5
    clock.record()
    saved = clock.save()
    assert saved == {'train_seconds': 7.5}
    resumed, later = _clock()
    resumed.load(saved)
    resumed.start()
    later.now += 2.5
    assert resumed.read() == 10.0


def test_the_budget_stops_at_the_first_reading_past_it_and_remembers_it():
    clock, timer = _clock(budget_s=10.0)
    clock.start()
    timer.now += 9.0
    assert not clock.out_of_time() and clock.stopped_at is None
    timer.now += 2.0
    assert clock.out_of_time() and clock.stopped_at == 11.0
    timer.now += 5.0
    assert clock.out_of_time() and clock.stopped_at == 11.0  # the first reading past it
    assert clock.before_step(3) is None


def test_no_budget_never_runs_out():
    clock, timer = _clock(budget_s=0.0)
    clock.start()
    timer.now += 1e9
    assert not clock.out_of_time()


def test_the_schedule_reads_the_step_or_the_training_seconds():
    by_step, timer = _clock(budget_s=100.0)
    by_step.start()
    timer.now += 3.0
    assert by_step.before_step(17) == 17
    assert by_step.schedule_input(17) == 17
    by_seconds, timer = _clock(budget_s=100.0, reads_seconds=True)
    by_seconds.start()
    timer.now += 3.0
    assert by_seconds.before_step(17) == 3.0
    by_seconds.record()
    assert by_seconds.schedule_input(17) == 3.0


def test_evaluation_counts_while_the_budget_lasts():
    clock, timer = _clock(budget_s=100.0)
    clock.start()
    timer.now += 20.0
    with clock.evaluating():
        timer.now += 5.0
    assert clock.seconds == 25.0 and not clock.out_of_time()


def test_evaluation_after_the_budget_ran_out_is_not_training():
    clock, timer = _clock(budget_s=10.0)
    clock.start()
    timer.now += 8.0
    with clock.evaluating():  # the budget runs out while validating
        timer.now += 5.0
    assert clock.out_of_time() and clock.stopped_at == 13.0
    assert clock.seconds == 8.0  # recorded where evaluation began

    clock, timer = _clock(budget_s=10.0)
    clock.start()
    timer.now += 12.0
    assert clock.out_of_time()  # ran out during the epoch, at 12 s
    timer.now += 1.0
    with clock.evaluating():
        timer.now += 5.0
    assert clock.seconds == 12.0  # where training stopped


def test_a_new_session_forgets_the_last_ones_stop():
    clock, timer = _clock(budget_s=10.0)
    clock.start()
    timer.now += 12.0
    assert clock.out_of_time()
    clock.budget_s = 20.0  # a resumed run may be given more time
    clock.start()
    assert not clock.out_of_time()


@pytest.mark.parametrize('budget_s', [0.0, 5.0])
def test_a_fresh_clock_has_trained_nothing(budget_s):
    clock, _ = _clock(budget_s=budget_s)
    assert clock.save() == {'train_seconds': 0.0} and clock.stopped_at is None
