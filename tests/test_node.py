"""The node side: the idle watchdog's policy on a fake clock, and how slots map to devices."""

from jupyter_burst.node.idle import IdlePolicy


def test_stops_only_after_idle_seconds_in_a_row():
    policy = IdlePolicy(idle_seconds=60, started=0)
    assert not policy.observe(False, 59)
    assert policy.observe(False, 60)


def test_any_busy_moment_restarts_the_countdown():
    policy = IdlePolicy(idle_seconds=60, started=0)
    assert not policy.observe(True, 50)
    assert not policy.observe(False, 100)
    assert policy.remaining(100) == 10
    assert policy.observe(False, 110)


def test_a_new_timeout_counts_the_time_already_idle():
    policy = IdlePolicy(idle_seconds=600, started=0)
    assert not policy.observe(False, 120)
    policy.idle_seconds = 60
    assert policy.observe(False, 121)


def test_slots_get_one_gpu_each_and_the_rest_are_labelled_cpu():
    from jupyter_burst.gpus import slot_devices

    assert slot_devices(3, 2) == ["cuda:0", "cuda:1", "cpu"]
    assert slot_devices(1, 0) == ["cpu"]
