"""EC2 provisioning against a moto server process: tags, fallbacks, retries, and no leaks."""

from __future__ import annotations

import base64
import dataclasses
import random

import pytest

from jupyter_burst.clusters.aws import provision, sdk
from jupyter_burst.clusters.aws.provision import LaunchSpec
from jupyter_burst.clusters.offers import Offer
from jupyter_burst.errors import ClusterError
from tests.aws_cloud import reset_moto
from tests.aws_fakes import Ec2Behaviour, aws_error

REGIONS = ("us-east-1", "us-west-2")


def offer(kind: str, region: str = "us-east-1", spot: bool = False, zone: str | None = None):
    gpus = {"g5.xlarge": 1, "g5.12xlarge": 4, "p4d.24xlarge": 8}[kind]
    return Offer(
        provider="aws",
        instance_type=kind,
        gpus=gpus,
        gpu_model="NVIDIA A10G",
        gpu_mem_gib=24,
        vcpus=4 * gpus,
        ram_gib=16 * gpus,
        region=region,
        spot=spot,
        price_per_hour=1.0 * gpus * (0.4 if spot else 1),
        zone=zone,
    )


@pytest.fixture
def aws(moto_endpoint, moto_image):
    """EC2 clients per region on a fresh moto state, each with EC2's launch habits."""
    reset_moto(moto_endpoint)
    endpoint, image = moto_endpoint, moto_image
    behaviour = Ec2Behaviour()
    made: dict[str, object] = {}

    def clients(region: str):
        if region not in made:
            made[region] = behaviour.attach(sdk.client("ec2", region, endpoint_url=endpoint))
        return made[region]

    return clients, behaviour, image


def spec(image: str, cluster: str = "c-1", role: str = "worker", count: int = 2) -> LaunchSpec:
    return LaunchSpec(
        cluster_id=cluster,
        role=role,
        count=count,
        image_id=image,
        user_data="#!/bin/bash\npython -m jupyter_burst.node --fetch-keys-from PRESIGNED_URL\n",
        owner="alice@laptop",
        max_lifetime_minutes=720,
    )


def held(clients, region: str = "us-east-1", cluster: str | None = None):
    return provision.find(clients, region, cluster_id=cluster)


def test_every_run_instances_call_carries_terminate_on_shutdown_tags_and_lifetime(aws):
    clients, behaviour, image = aws
    got = provision.launch(clients, spec(image, count=2), [offer("g5.xlarge", spot=True)])
    assert len(got) == 2 and all(i.spot and i.price_per_hour == 0.4 for i in got)
    (call,) = behaviour.calls
    assert call["InstanceInitiatedShutdownBehavior"] == "terminate"
    tags = {t["Key"]: t["Value"] for t in call["TagSpecifications"][0]["Tags"]}
    assert tags["jupyter-burst:cluster"] == "c-1" and tags["jupyter-burst:owner"] == "alice@laptop"
    assert tags["jupyter-burst:max-lifetime-minutes"] == "720"
    assert tags["jupyter-burst:expires"].endswith("Z")
    assert call["InstanceMarketOptions"]["MarketType"] == "spot"
    assert call["MetadataOptions"]["HttpTokens"] == "required"
    # EC2 itself has them as asked:
    raw = clients("us-east-1").describe_instance_attribute(
        InstanceId=got[0].id, Attribute="instanceInitiatedShutdownBehavior"
    )
    assert raw["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    assert {i.id for i in held(clients, cluster="c-1")} == {i.id for i in got}


def test_a_launch_counts_what_already_runs_and_starts_only_the_shortfall(aws):
    clients, behaviour, image = aws
    first = provision.launch(clients, spec(image, count=2), [offer("g5.xlarge")])
    again = provision.launch(clients, spec(image, count=3), [offer("g5.xlarge")])
    assert {i.id for i in first} <= {i.id for i in again} and len(again) == 3
    assert behaviour.calls[-1]["MaxCount"] == 1
    assert len(held(clients, cluster="c-1")) == 3


def test_insufficient_capacity_moves_to_the_next_offer_and_says_so(aws):
    clients, behaviour, image = aws
    behaviour.fault = lambda p: (
        "InsufficientInstanceCapacity" if p["InstanceType"] == "g5.12xlarge" else None
    )
    notes: list[str] = []
    got = provision.launch(
        clients,
        spec(image, count=1),
        [offer("g5.12xlarge"), offer("p4d.24xlarge")],
        on_note=notes.append,
    )
    assert [i.instance_type for i in got] == ["p4d.24xlarge"]
    assert notes == [
        "burst: g5.12xlarge on-demand in us-east-1 cannot be had now "
        "(InsufficientInstanceCapacity); trying the next offer"
    ]


def test_spot_unavailable_falls_back_to_on_demand(aws):
    clients, behaviour, image = aws
    behaviour.fault = lambda p: (
        "InsufficientInstanceCapacity" if "InstanceMarketOptions" in p else None
    )
    got = provision.launch(
        clients, spec(image, count=2), [offer("g5.xlarge", spot=True), offer("g5.xlarge")]
    )
    assert [i.spot for i in got] == [False, False]
    assert all(not i.spot for i in held(clients, cluster="c-1"))


def test_the_head_node_is_never_spot(aws):
    clients, behaviour, image = aws
    got = provision.launch(
        clients,
        spec(image, role="head", count=1),
        [offer("g5.xlarge", spot=True), offer("g5.xlarge")],
    )
    assert [i.spot for i in got] == [False] and "InstanceMarketOptions" not in behaviour.calls[0]


@pytest.mark.hardening
def test_throttling_is_retried_with_backoff(aws):
    clients, behaviour, image = aws
    left = [3]

    def throttle(params):
        left[0] -= 1
        return "RequestLimitExceeded" if left[0] >= 0 else None

    behaviour.fault = throttle
    waits: list[float] = []
    got = provision.launch(clients, spec(image, count=1), [offer("g5.xlarge")], sleep=waits.append)
    assert len(got) == 1 and behaviour.throttled == 3 and len(waits) == 3


def test_a_partial_launch_takes_the_rest_from_the_next_offer(aws):
    clients, behaviour, image = aws
    behaviour.cap = lambda p: 3 if p["InstanceType"] == "g5.xlarge" else None
    notes: list[str] = []
    got = provision.launch(
        clients,
        spec(image, count=8),
        [offer("g5.xlarge"), offer("g5.12xlarge", region="us-west-2")],
        on_note=notes.append,
    )
    assert len(got) == 8
    assert [i.region for i in got].count("us-east-1") == 3
    assert "gave 3 of 8 instances" in notes[0]


def test_running_out_of_offers_is_one_line_and_hands_back_what_was_launched(aws):
    clients, behaviour, image = aws
    behaviour.cap = lambda p: 2
    behaviour.fault = lambda p: "VcpuLimitExceeded" if p["InstanceType"] == "p4d.24xlarge" else None
    with pytest.raises(provision.CapacityShortfall) as info:
        provision.launch(clients, spec(image, count=4), [offer("g5.xlarge"), offer("p4d.24xlarge")])
    assert str(info.value).startswith("burst: only 2 of the 4 worker instances could be launched")
    assert "p4d.24xlarge on-demand in us-east-1: VcpuLimitExceeded" in str(info.value)
    assert "\n" not in str(info.value)
    assert len(info.value.launched) == 2
    provision.terminate(clients, info.value.launched)
    assert held(clients, cluster="c-1") == []


@pytest.mark.hardening
def test_auth_errors_are_explained_never_retried(aws):
    clients, behaviour, image = aws
    behaviour.fault = lambda p: "AuthFailure"
    with pytest.raises(ClusterError) as info:
        provision.launch(clients, spec(image, count=1), [offer("g5.xlarge"), offer("g5.12xlarge")])
    assert str(info.value).startswith("burst: AWS refused the credentials (AuthFailure")
    assert len(behaviour.calls) == 1


def test_no_user_data_holds_a_private_key(aws):
    clients, behaviour, image = aws
    got = provision.launch(clients, spec(image, count=1), [offer("g5.xlarge")])
    raw = clients("us-east-1").describe_instance_attribute(
        InstanceId=got[0].id, Attribute="userData"
    )
    text = base64.b64decode(raw["UserData"]["Value"]).decode()
    assert "PRIVATE KEY" not in text and "jupyter_burst.node" in text
    assert all("PRIVATE KEY" not in c["UserData"] for c in behaviour.calls)


def test_reconcile_and_gc_terminate_exactly_our_stale_instances_and_are_idempotent(aws):
    clients, behaviour, image = aws
    live = provision.launch(clients, spec(image, cluster="live", count=1), [offer("g5.xlarge")])
    gone = provision.launch(clients, spec(image, cluster="gone", count=2), [offer("g5.xlarge")])
    theirs = spec(image, cluster="theirs", count=1)
    theirs = LaunchSpec(**{**theirs.__dict__, "owner": "bob@desk"})
    bobs = provision.launch(clients, theirs, [offer("g5.xlarge")])
    untagged = clients("us-east-1").run_instances(
        ImageId=image, InstanceType="t3.micro", MinCount=1, MaxCount=1
    )["Instances"][0]["InstanceId"]

    later = max(i.launched for i in live + gone + bobs) + 600
    young = provision.stale(clients, REGIONS, {"live"}, owner="alice@laptop")
    assert young == []  # just launched: perhaps a cluster forming right now
    found = provision.stale(clients, REGIONS, {"live"}, owner="alice@laptop", now=later)
    assert {i.id for i in found} == {i.id for i in gone}
    ended = provision.reconcile(clients, REGIONS, {"live"}, owner="alice@laptop", now=later)
    assert set(ended) == {i.id for i in gone}
    assert provision.reconcile(clients, REGIONS, {"live"}, owner="alice@laptop", now=later) == []
    still = {i.id for i in provision.find(clients, "us-east-1", owner=None)}
    assert still == {live[0].id, bobs[0].id}
    states = clients("us-east-1").describe_instances(InstanceIds=[untagged])
    assert states["Reservations"][0]["Instances"][0]["State"]["Name"] in ("pending", "running")


def test_100_randomized_provisioning_runs_leave_no_instance_behind_after_reconcile(aws):
    """Capacity errors, throttling, partial launches and crashes, mixed at random."""
    clients, behaviour, image = aws
    rng = random.Random(20261125)
    # Runs spread over regions: moto lists instances in time linear in all it holds there.
    regions = ("us-east-1", "us-east-2", "us-west-1", "us-west-2", "eu-west-1", "eu-central-1")
    outcomes = {"launched": 0, "short": 0, "crashed": 0}
    for run in range(100):
        cluster = f"r{run}"
        first, second = rng.sample(regions, 2)
        choices = [
            offer("g5.12xlarge", region=first, spot=True),
            offer("g5.12xlarge", region=first),
            offer("g5.12xlarge", region=second, spot=True),
            offer("g5.12xlarge", region=second),
        ]
        behaviour.fault = lambda p: rng.choice(  # noqa: B023
            [
                None,
                None,
                "InsufficientInstanceCapacity",
                "RequestLimitExceeded",
                "VcpuLimitExceeded",
            ]
        )
        behaviour.cap = lambda p: rng.choice([None, None, 3, 1])  # noqa: B023
        behaviour.crash_after = lambda p: rng.random() < 0.1  # noqa: B023
        try:
            provision.launch(
                clients, spec(image, cluster=cluster, count=8), choices, sleep=lambda s: None
            )
            outcomes["launched"] += 1
        except ClusterError:  # out of offers (CapacityShortfall), or throttled for too long
            outcomes["short"] += 1
        except RuntimeError:
            outcomes["crashed"] += 1
        behaviour.fault, behaviour.cap = (lambda p: None), (lambda p: None)
        behaviour.crash_after = lambda p: False
        if rng.random() < 0.5:  # half the clusters are torn down at once; reconcile finds the rest
            found = [i for r in (first, second) for i in held(clients, r, cluster)]
            provision.terminate(clients, found, sleep=lambda s: None)
    assert all(outcomes.values()), outcomes  # every kind of ending happened
    assert sum(len(held(clients, r)) for r in regions) > 0  # reconcile has work to do
    provision.reconcile(clients, regions, set(), owner="alice@laptop", now=2**40)
    assert [i.id for r in regions for i in held(clients, r)] == []
    assert provision.reconcile(clients, regions, set(), owner="alice@laptop", now=2**40) == []


def test_a_missing_boto3_is_one_line_with_the_install_hint(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_boto3(name, *args, **kwargs):
        if name == "boto3":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_boto3)
    with pytest.raises(ClusterError) as info:
        sdk.boto3_module()
    assert str(info.value) == (
        "burst: the aws provider needs boto3; install it with: pip install 'jupyter-burst[aws]'"
    )


def test_an_unknown_error_code_is_one_line_naming_the_offer(aws):
    clients, behaviour, image = aws
    behaviour.fault = lambda p: "InvalidAMIID.NotFound"
    with pytest.raises(ClusterError) as info:
        provision.launch(clients, spec(image, count=1), [offer("g5.xlarge")])
    assert str(info.value) == (
        "burst: launching g5.xlarge on-demand in us-east-1 failed "
        "(InvalidAMIID.NotFound: InvalidAMIID.NotFound)"
    )


def test_aws_error_helper_builds_client_errors():
    exc = aws_error("Throttling")
    assert sdk.error_code(exc) == "Throttling" and sdk.error_message(exc) == "Throttling"


def test_an_instance_profile_is_passed_to_run_instances_only_when_set():
    # The nodes carry no AWS credentials: an instance profile is how a cell there reaches S3.
    plain = provision.run_instances_arguments(spec("ami-1"), offer("g5.xlarge"), 1, "t", 0.0)
    assert "IamInstanceProfile" not in plain
    with_profile = dataclasses.replace(spec("ami-1"), instance_profile="burst-ckpts")
    arguments = provision.run_instances_arguments(with_profile, offer("g5.xlarge"), 1, "t", 0.0)
    assert arguments["IamInstanceProfile"] == {"Name": "burst-ckpts"}
    assert {k: v for k, v in arguments.items() if k != "IamInstanceProfile"} == plain
