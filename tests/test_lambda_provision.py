"""Lambda launches that go wrong, at random, leave nothing billing once ``%burst gc`` has run.

``LambdaProvider.launch`` against the fake of Lambda's API with faults injected on every
kind of request: refusals before anything is done, replies lost after it was done (a launch
whose machines exist though the kernel never learned their ids), capacity gone, machines
that turn unhealthy, a terminate or a ruleset deletion that fails during the clean-up. No
machine boots here (the API's books only), so each launch that gets that far fails at the
first login, as a machine that never comes up would.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import dask.config
import pytest

from jupyter_burst.clusters import lambda_cloud
from jupyter_burst.clusters.lambda_cloud import api, gc, host_keys, machines
from jupyter_burst.clusters.provider import ClusterRequest
from jupyter_burst.errors import ClusterError
from tests.aws_fakes import free_port
from tests.lambda_fake import KEY, LambdaFake

OWNER = "alice@laptop"


@pytest.fixture
def fake(monkeypatch, tmp_path):
    server = LambdaFake(request_spacing=0.0, launch_spacing=0.0).start()
    settings = {
        "API_URL": server.url,
        "CLIENT_CIDR": "203.0.113.7/32",
        "ALLOW_WITHOUT_NODE_KEY": "true",
        "SSH_PORT": str(free_port()),  # nothing listens: a machine that never comes up
        "BOOT_TIMEOUT": "0.2",
        "OWNER": OWNER,
    }
    for name, value in settings.items():
        monkeypatch.setenv(f"DASK_BURST__LAMBDA__{name}", value)
    monkeypatch.setenv(api.KEY_ENV, KEY)
    monkeypatch.setattr(api, "REQUEST_SPACING", 0.0)
    monkeypatch.setattr(api, "LAUNCH_SPACING", 0.0)
    monkeypatch.setattr(api, "_pace", api._Pace())
    monkeypatch.setattr(machines, "_POLL_SECONDS", 0.01)
    monkeypatch.setattr(host_keys, "_RETRY_SECONDS", 0.0)
    # The environment's pre-flight is another test's subject; no launch here gets to use it.
    monkeypatch.setattr(
        lambda_cloud.env_lock, "preflight", lambda state_dir, gpu: SimpleNamespace(hash="0" * 12)
    )
    dask.config.refresh()
    yield server
    server.stop()
    monkeypatch.undo()
    dask.config.refresh()


def test_100_randomized_faulty_lambda_launches_leave_nothing_behind_after_gc(fake, state_dir):
    rng = random.Random(20261206)
    outcomes: dict[str, int] = {}

    def fault(method: str, path: str):
        if rng.random() < 0.6:
            return None
        if method == "GET" and path.startswith("/instances/"):
            instance = fake.instances.get(path.removeprefix("/instances/"))
            if instance is not None and instance.status != "terminated":
                instance.status = "unhealthy"  # it will never be active
            return None
        if method == "POST" and path == "/instance-operations/launch":
            return rng.choice(
                [
                    ("before", 400, "instance-operations/launch/insufficient-capacity"),
                    ("before", 500, "global/internal-error"),
                    ("after", 500, "global/internal-error"),  # they exist; we never heard
                ]
            )
        if method in ("POST", "PATCH", "DELETE"):
            return rng.choice([("before", 500, "global/internal-error"),
                               ("after", 500, "global/internal-error")])  # fmt: skip
        return None

    provider = lambda_cloud.LambdaProvider()
    request = ClusterRequest(name="r", slots=2, idle_minutes=1, state_dir=state_dir)
    provider.plan(request)  # the quote, as %%burst makes it, before the faults
    fake.fault = fault
    for _ in range(100):
        try:
            provider.launch(request)
            outcomes["launched"] = outcomes.get("launched", 0) + 1
        except ClusterError as exc:
            kind = type(exc).__name__
            outcomes[kind] = outcomes.get(kind, 0) + 1
    fake.fault = None
    # Lambda's refusals, and the machines that never became active or were never reached.
    assert set(outcomes) == {"LambdaApiError", "ClusterError"}, outcomes
    left = [i for i in fake.instances.values() if i.status != "terminated"]
    assert left and fake.firewall_rulesets  # clean-ups failed too: gc has work to do

    client = api.LambdaApi(KEY, fake.url)
    listing = gc.collect(client, OWNER, state_dir, now=2**40)
    gc.sweep(client, listing, state_dir)
    assert [i.id for i in fake.instances.values() if i.status != "terminated"] == []
    assert fake.firewall_rulesets == {}
    assert gc.collect(client, OWNER, state_dir, now=2**40).empty
