"""GCP launches that go wrong, at random, leave nothing billing once ``%burst gc`` has run.

``GcpProvider.launch`` against the fake of Compute Engine's REST API with faults injected
on every kind of request (refusals before anything is done, replies lost after it was done:
an instance that exists though the kernel never heard it was made), zones out of the machine
type, clean-ups that fail. No instance boots here (the API's books only), so each launch that
gets that far fails waiting for the host keys an instance never publishes.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import dask.config
import pytest

from jupyter_burst.clusters import gcp
from jupyter_burst.clusters.gcp import gc, machines, sdk
from jupyter_burst.clusters.provider import ClusterRequest
from jupyter_burst.errors import ClusterError
from tests.aws_fakes import free_port
from tests.gcp_fake import PROJECT, ComputeFake

OWNER = "alice-laptop"


@pytest.fixture
def fake(monkeypatch):
    server = ComputeFake().start()
    settings = {
        "API_ENDPOINT": server.url,
        "BILLING_ENDPOINT": server.url,
        "PROJECT": PROJECT,
        "ZONES": "us-central1-a,us-central1-b",
        "CLIENT_CIDR": "203.0.113.7/32",
        "SSH_PORT": str(free_port()),
        "BOOT_TIMEOUT": "0.2",
        "OWNER": OWNER,
    }
    for name, value in settings.items():
        monkeypatch.setenv(f"DASK_BURST__GCP__{name}", value)
    monkeypatch.setattr(machines, "_POLL_SECONDS", 0.01)
    # The environment's pre-flight is another test's subject; no launch here gets to use it.
    monkeypatch.setattr(
        gcp.env_lock, "preflight", lambda state_dir, gpu: SimpleNamespace(hash="0" * 12)
    )
    dask.config.refresh()
    yield server
    server.stop()
    monkeypatch.undo()
    dask.config.refresh()


def test_100_randomized_faulty_gcp_launches_leave_nothing_behind_after_gc(fake, state_dir):
    rng = random.Random(20261206)
    outcomes: dict[str, int] = {}

    def fault(method: str, path: str):
        if rng.random() < 0.85 or "/operations/" in path:
            return None
        if method == "POST" and path.endswith("/instances"):
            if rng.random() < 0.3:  # this zone is out of the type for this try
                fake.exhausted.add(("us-central1-a", "n1-standard-4"))
            return rng.choice([("before", 503, "backendError"), ("after", 503, "backendError")])
        if method in ("POST", "DELETE") or "getGuestAttributes" in path:
            return rng.choice([("before", 500, "backendError"), ("after", 500, "backendError")])
        return None

    provider = gcp.GcpProvider()
    request = ClusterRequest(name="r", slots=2, idle_minutes=1, state_dir=state_dir)
    fake.fault = fault
    for _ in range(100):
        fake.exhausted.clear()
        try:
            provider.launch(request)
            outcomes["launched"] = outcomes.get("launched", 0) + 1
        except ClusterError as exc:
            kind = type(exc).__name__
            outcomes[kind] = outcomes.get(kind, 0) + 1
    fake.fault = None
    # Compute Engine's refusals, and the instances that never published their host keys.
    assert set(outcomes) == {"GcpError", "ClusterError"}, outcomes
    assert fake.instances and fake.firewalls  # clean-ups failed too: gc has work to do

    compute = sdk.compute()
    listing = gc.collect(compute, state_dir, now=2**40)
    gc.sweep(compute, listing, state_dir)
    assert fake.instances == {} and fake.firewalls == {}
    assert gc.collect(compute, state_dir, now=2**40).empty
