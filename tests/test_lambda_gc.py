"""``%burst gc`` on Lambda (clusters/lambda_cloud/gc.py) against the fake of Lambda's API:
what it lists and ends, and what it never touches (another owner's machine, a cluster that
may be forming, a ruleset a start under way may have just made); through a real kernel,
``%burst gc --yes`` ends a Lambda user's leftovers even without any AWS account."""

from __future__ import annotations

import time

import dask.config
import pytest

from jupyter_burst.clusters.lambda_cloud import api, firewall, gc, machines
from jupyter_burst.clusters.offers import Offer
from tests.harness import burst_kernel
from tests.lambda_fake import KEY, LambdaFake

HOUR = 3600.0
ME = "me@laptop"


@pytest.fixture
def fake(monkeypatch, tmp_path):
    server = LambdaFake(request_spacing=0.0, launch_spacing=0.0).start()
    monkeypatch.setenv("DASK_BURST__LAMBDA__API_URL", server.url)
    monkeypatch.setenv(api.KEY_ENV, KEY)
    monkeypatch.setattr(api, "REQUEST_SPACING", 0.0)
    monkeypatch.setattr(api, "LAUNCH_SPACING", 0.0)
    monkeypatch.setattr(api, "_pace", api._Pace())
    dask.config.refresh()
    yield server
    server.stop()
    monkeypatch.undo()
    dask.config.refresh()


def _launch(fake: LambdaFake, cluster: str, owner: str, launched: float, lifetime: float = 12):
    client = api.LambdaApi(KEY, fake.url)
    ruleset = firewall.create(client, cluster, "us-east-1", "203.0.113.7/32")
    offer = Offer("lambda", "gpu_1x_a10", 1, "NVIDIA A10", 24, 30, 200, "us-east-1", False, 0.75)
    body = {
        "name": machines.NAME_PREFIX + cluster,
        "ssh_key_names": ["burst"],
        "tags": machines.tags(cluster, owner, "node", launched, launched + lifetime * HOUR),
        "firewall_rulesets": [{"id": ruleset}],
    }
    return machines.launch(client, [offer], 1, lambda o: body).ids[0], ruleset


def test_gc_ends_our_stale_and_expired_machines_and_their_rulesets_and_nothing_else(
    fake, state_dir
):
    now = time.time()
    stale, stale_rules = _launch(fake, "old-1111", ME, now - 2 * HOUR)
    expired, _ = _launch(fake, "long-2222", ME, now - 60, lifetime=-1)  # past its expiry
    forming, forming_rules = _launch(fake, "new-3333", ME, now - 60)  # may be forming
    theirs, _ = _launch(fake, "other-4444", "you@desk", now - 2 * HOUR)
    client = api.LambdaApi(KEY, fake.url)
    # A ruleset nobody holds: made long ago (gone), or a moment ago (a start may be under way).
    empty_old = firewall.create(client, "lost-5555", "us-east-1", "203.0.113.7/32")
    fake.firewall_rulesets[empty_old]["created"] = "2026-01-01T00:00:00Z"
    empty_new = firewall.create(client, "just-6666", "us-east-1", "203.0.113.7/32")
    for ruleset in fake.firewall_rulesets.values():
        if ruleset["id"] not in (empty_new,):
            ruleset["created"] = "2026-01-01T00:00:00Z"

    listing = gc.collect(client, ME, state_dir)
    assert sorted(m["id"] for m in listing.machines) == sorted([stale, expired])
    assert listing.spared == 1
    shown = gc.format_listing(listing)
    assert "2 Lambda machines of me@laptop without a live cluster:" in shown
    assert "old-1111" in shown and "0.75" in shown and "1 machine launched in the last" in shown
    assert stale_rules in shown and empty_old in shown and empty_new not in shown

    said = gc.sweep(client, listing, state_dir)
    assert said == "burst: terminated 2 Lambda machines and deleted 3 firewall rulesets"
    running = {i.id for i in fake.instances.values() if i.status != "terminated"}
    assert running == {forming, theirs}
    assert set(fake.firewall_rulesets) >= {forming_rules, empty_new}
    assert stale_rules not in fake.firewall_rulesets and empty_old not in fake.firewall_rulesets


def test_a_lambda_user_without_an_aws_account_gets_their_leftovers_ended_by_burst_gc(
    fake, state_dir, workdir
):
    stale, _ = _launch(fake, "old-1111", ME, time.time() - 2 * HOUR)
    env = {
        "LAMBDA_API_KEY": KEY,
        "DASK_BURST__LAMBDA__API_URL": fake.url,
        "DASK_BURST__LAMBDA__OWNER": ME,
        # No AWS here: nothing answers for EC2, and no credentials.
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    }
    with burst_kernel(state_dir, workdir, env) as kernel:
        listed = kernel.ok("%burst gc").stdout
        assert "(AWS not cleaned up)" in listed
        assert f"burst: 1 Lambda machine of {ME} without a live cluster:" in listed
        assert fake.instances[stale].status != "terminated"  # listed only, until --yes
        ended = kernel.ok("%burst gc --yes", timeout=120).stdout
    assert "burst: terminated 1 Lambda machine" in ended
    assert fake.instances[stale].status == "terminated"
