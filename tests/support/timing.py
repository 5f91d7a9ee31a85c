"""Stage-timer tests on a fake clock: deterministic, so they can assert where time goes."""


def timed_with_a_fake_clock(timer, slow_module, call, ticks=1000.0, method="forward"):
    """Run ``timer.run(call)`` on a clock that advances one unit per reading and ``ticks`` units
    inside ``slow_module``'s ``method``: which stage holds the ticks is then deterministic."""
    clock = [0.0]

    def now():
        clock[0] += 1.0
        return clock[0]

    def slow(*args, _original=getattr(slow_module, method), **kwargs):
        clock[0] += ticks
        return _original(*args, **kwargs)

    timer._now = now
    setattr(slow_module, method, slow)
    try:
        return timer.run(call)
    finally:
        delattr(slow_module, method)
