"""The thread count is chosen by timing training iterations (fake timer), and chosen again when
the speed drifts, so that a busy moment at start-up does not decide the whole run."""

import types

import pytest

from centermask.engine.threads import ThreadChoice, default_thread_candidates


class FakeMachine:
    """Iteration seconds by thread count, for the current load; the hook's clock and its
    set_threads act on it."""

    def __init__(self, seconds: dict):
        self.seconds = seconds
        self.now = 0.0
        self.threads = None
        self.used = []

    def clock(self) -> float:
        return self.now

    def set_threads(self, n: int) -> None:
        self.threads = n

    def run(self, hook: ThreadChoice, iterations: int, trainer) -> None:
        for _ in range(iterations):
            hook.before_step()
            self.now += self.seconds[self.threads]
            self.used.append(self.threads)
            hook.after_step()
            trainer.iter += 1


def _hook(machine, **kwargs) -> ThreadChoice:
    hook = ThreadChoice([2, 1], clock=machine.clock, set_threads=machine.set_threads, **kwargs)
    hook.trainer = types.SimpleNamespace(iter=0, start_iter=0)
    hook.before_train()
    return hook


def test_a_busy_start_picks_one_thread_and_its_end_brings_two_back():
    machine = FakeMachine({2: 1.3, 1: 1.0})  # another process is busy: two threads wait
    hook = _hook(machine, trial_iterations=4, window=10, drift=0.2)
    trainer = hook.trainer
    machine.run(hook, 30, trainer)
    # Iteration 0 is not timed; iterations 1-8 interleave 2, 1, 2, 1, ...
    assert machine.used[1:9] == [2, 1] * 4
    assert hook.threads == 1 and hook.choices[0][:2] == (8, 1)
    assert machine.used[9:30] == [1] * 21

    machine.seconds = {2: 0.5, 1: 0.8}  # the other process ended
    machine.run(hook, 30, trainer)
    # 1 thread now takes 0.8/1.0 of the time, beyond the 1/1.2 drift limit: once the window of
    # 10 holds 6 such iterations its median moves, and a new trial (8 iterations) picks 2 threads.
    assert [c[1] for c in hook.choices] == [1, 2]
    assert hook.choices[1][0] == 30 + 6 + 8 - 1
    assert hook.choices[1][2] == pytest.approx({2: 0.5, 1: 0.8})
    assert machine.used[-1] == 2


def test_steady_speed_keeps_the_choice_until_the_periodic_recheck():
    machine = FakeMachine({2: 0.5, 1: 0.8})
    hook = _hook(machine, trial_iterations=3, window=5, drift=0.2, recheck_every=50)
    machine.run(hook, 40, hook.trainer)
    assert [c[1] for c in hook.choices] == [2]
    assert machine.used[7:] == [2] * 33  # no trial after the first (iterations 1-6)

    # 2 threads keep their speed but 1 thread would now be faster: only the recheck sees it.
    machine.seconds = {2: 0.5, 1: 0.3}
    machine.run(hook, 30, hook.trainer)
    assert [c[1] for c in hook.choices] == [2, 1]
    assert hook.choices[1][0] == 6 + 50 + 6  # first choice, 50 iterations, a 6-iteration trial


def test_slower_iterations_within_the_drift_limit_start_no_trial():
    machine = FakeMachine({2: 1.0, 1: 1.5})
    hook = _hook(machine, trial_iterations=2, window=4, drift=0.2)
    machine.run(hook, 10, hook.trainer)
    machine.seconds = {2: 1.15, 1: 1.7}  # 15% slower, e.g. more RoIs once the detector fires
    machine.run(hook, 40, hook.trainer)
    assert len(hook.choices) == 1 and machine.used[5:] == [2] * 45


def test_default_candidates_are_all_cores_and_half():
    assert default_thread_candidates(2) == [2, 1]
    assert default_thread_candidates(16) == [16, 8]
    assert default_thread_candidates(1) == [1]
    with pytest.raises(ValueError, match="positive"):
        ThreadChoice([0])
