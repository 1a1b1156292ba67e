"""A cluster's Lambda machines (clusters/lambda_cloud/machines.py) against the fake of
Lambda's API (tests/lambda_fake.py): the next offer where there is no capacity, a machine
that will never be active, termination of what is gone already, and finding ours again."""

from __future__ import annotations

import pytest

from jupyter_burst.clusters.lambda_cloud import api, machines
from jupyter_burst.clusters.offers import Offer
from jupyter_burst.errors import ClusterError
from tests.lambda_fake import KEY, LambdaFake


@pytest.fixture
def client(monkeypatch):
    fake = LambdaFake(request_spacing=0.0, launch_spacing=0.0).start()
    monkeypatch.setattr(api, "REQUEST_SPACING", 0.0)
    monkeypatch.setattr(api, "LAUNCH_SPACING", 0.0)
    monkeypatch.setattr(api, "_pace", api._Pace())
    monkeypatch.setattr(machines, "_POLL_SECONDS", 0.05)
    yield api.LambdaApi(KEY, fake.url), fake
    fake.stop()


def _offer(instance_type: str, region: str, gpus: int = 8) -> Offer:
    return Offer("lambda", instance_type, gpus, "NVIDIA A100", 40, 124, 1800, region, False, 10.0)


BODY = {"name": "burst-gpu-1234-head", "ssh_key_names": ["burst"], "user_data": "#!/bin/bash\n",
        "tags": machines.tags("gpu-1234", "me@laptop", "head", 1.8e9, 1.9e9)}  # fmt: skip


def _body(offer: Offer) -> dict:
    return BODY


def test_a_launch_moves_to_the_next_offer_where_there_is_no_capacity_and_says_so(client):
    client, fake = client
    said = []
    choices = [_offer("gpu_8x_h100_sxm5", "us-east-1"), _offer("gpu_8x_a100", "us-east-1")]
    launched = machines.launch(client, choices, 2, _body, on_note=said.append)
    assert launched.offer.instance_type == "gpu_8x_a100" and len(launched.ids) == 2
    assert said == [
        "burst: Lambda has no capacity for gpu_8x_h100_sxm5 in us-east-1 now; trying the next offer"
    ]
    made = [fake.instances[i] for i in launched.ids]
    assert {(m.type_name, m.region, m.name) for m in made} == {
        ("gpu_8x_a100", "us-east-1", "burst-gpu-1234-head")
    }
    assert {t["key"]: t["value"] for t in made[0].tags}["burst-cluster"] == "gpu-1234"
    with pytest.raises(
        ClusterError, match="^burst: Lambda has no capacity for any offer that fits"
    ):
        machines.launch(client, choices[:1], 1, _body, on_note=said.append)
    # Anything but capacity is the launch's error, not a reason to try elsewhere.
    with pytest.raises(api.LambdaApiError, match="Exactly one SSH key"):
        machines.launch(client, choices[1:], 1, lambda o: {**BODY, "ssh_key_names": []})


def test_machines_are_awaited_until_active_and_one_that_never_will_be_is_one_line(client):
    client, fake = client
    ids = machines.launch(client, [_offer("gpu_1x_a10", "us-west-1", 1)], 2, _body).ids
    up = machines.wait_active(client, ids, timeout=10)
    assert [m["status"] for m in up] == ["active", "active"] and all(m["ip"] for m in up)
    more = machines.launch(client, [_offer("gpu_1x_a10", "us-west-1", 1)], 1, _body).ids
    fake.instances[more[0]].status = "unhealthy"
    with pytest.raises(ClusterError, match=f"machine {more[0]} became unhealthy while booting"):
        machines.wait_active(client, more, timeout=10)


def test_termination_ends_the_machines_even_when_some_are_gone_and_ours_finds_the_rest(client):
    client, fake = client
    ids = machines.launch(client, [_offer("gpu_1x_a10", "us-east-1", 1)], 2, _body).ids
    stranger = machines.launch(
        client,
        [_offer("gpu_1x_a10", "us-east-1", 1)],
        1,
        lambda o: {**BODY, "name": "my-own-box", "tags": []},
    ).ids
    assert sorted(m["id"] for m in machines.ours(client)) == sorted(ids)  # not the user's own box
    machines.terminate(client, [ids[0], "no-such-machine"])
    assert fake.instances[ids[0]].status == "terminated"
    machines.terminate(client, ids)  # one of them ended already: no error
    assert {fake.instances[i].status for i in ids} == {"terminated"}
    assert fake.instances[stranger[0]].status != "terminated" and machines.ours(client) == []


def test_a_head_with_the_users_opt_in_key_terminates_its_own_cluster(client, tmp_path):
    import json
    import os
    import subprocess
    import sys

    client, fake = client
    ids = machines.launch(client, [_offer("gpu_1x_a10", "us-east-1", 1)], 2, _body).ids
    order = tmp_path / "lambda-terminate.json"
    order.write_text(json.dumps({"url": fake.url, "key": KEY, "instances": list(ids)}))
    run = [sys.executable, "-m", "jupyter_burst.node.lambda_terminate", str(order)]
    os.chmod(order, 0o644)  # a key others could read: refused, nothing sent
    refused = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "must be this user's alone" in refused.stderr
    assert "terminated" not in {fake.instances[i].status for i in ids}
    os.chmod(order, 0o600)
    done = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert {fake.instances[i].status for i in ids} == {"terminated"}
    assert KEY not in done.stderr  # the log names the machines, never the key
