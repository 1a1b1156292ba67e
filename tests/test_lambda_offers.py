"""The ``lambda`` provider's offers and API client, against a local fake of Lambda Cloud's
REST API (tests/lambda_fake.py): live prices and capacity with a key, the shipped catalog
without one, the API's pace kept, its refusals in one line, the key never sent in clear."""

from __future__ import annotations

import os

import pytest

from jupyter_burst.clusters import plans
from jupyter_burst.clusters.lambda_cloud import LambdaProvider, api
from jupyter_burst.clusters.offers import OfferRequest
from jupyter_burst.errors import ClusterError
from tests.lambda_fake import KEY, LambdaFake

SPACING = 0.2  # the fake's limit between two requests, kept short for the tests


@pytest.fixture
def fake(monkeypatch, tmp_path):
    server = LambdaFake(request_spacing=SPACING, launch_spacing=4 * SPACING).start()
    monkeypatch.setenv("DASK_BURST__LAMBDA__API_URL", server.url)
    monkeypatch.setenv("DASK_BURST__LAMBDA__API_KEY_FILE", str(tmp_path / "no-key-file"))
    monkeypatch.setenv(api.KEY_ENV, KEY)
    # The client's spacing well above the fake's limits: a request that takes longer to
    # arrive than the one after it (a loaded machine) is still no faster than the limit.
    monkeypatch.setattr(api, "REQUEST_SPACING", 2.5 * SPACING)
    monkeypatch.setattr(api, "LAUNCH_SPACING", 6 * SPACING)
    monkeypatch.setattr(api, "_pace", api._Pace())
    import dask.config

    dask.config.refresh()
    yield server
    server.stop()
    monkeypatch.undo()
    dask.config.refresh()


def test_with_a_key_offers_are_the_apis_prices_where_it_has_capacity_now(fake):
    offers = LambdaProvider().offers(OfferRequest(gpus=1))
    where = sorted((o.instance_type, o.region, o.price_per_hour) for o in offers)
    assert where == [
        ("gpu_1x_a10", "us-east-1", 0.75),
        ("gpu_1x_a10", "us-west-1", 0.75),
        ("gpu_1x_h100_pcie", "us-west-1", 2.49),
        ("gpu_8x_a100", "us-east-1", 10.32),
        ("gpu_8x_v100", "europe-central-1", 4.4),
    ]  # the sold-out H100 × 8 and the CPU-only type are not offered
    v100 = next(o for o in offers if o.instance_type == "gpu_8x_v100")
    assert (v100.gpu_model, v100.gpu_mem_gib, v100.gpus, v100.vcpus) == ("NVIDIA V100", 16, 8, 92)
    # Eight GPUs with 40 GiB each: the A100s in Virginia, the only place they can start now.
    plan = plans.cheapest(offers, OfferRequest(gpus=8, gpu_mem_gib=40))
    assert (plan.offer.instance_type, plan.offer.region, plan.nodes) == (
        "gpu_8x_a100",
        "us-east-1",
        1,
    )
    assert LambdaProvider().offers(OfferRequest(gpus=1, spot=True)) == []  # no spot market
    assert {
        o.region for o in LambdaProvider().offers(OfferRequest(gpus=1, regions=("us-west-1",)))
    } == {"us-west-1"}


def test_without_a_key_the_shipped_catalog_answers_and_says_capacity_is_unknown(fake, monkeypatch):
    monkeypatch.delenv(api.KEY_ENV)
    provider = LambdaProvider()
    offers = provider.offers(OfferRequest(gpus=8))
    assert offers and {o.provider for o in offers} == {"lambda"}
    assert "shipped catalog" in provider.prices_note and api.KEY_ENV in provider.prices_note
    assert not fake.requests  # nothing asked of the API without a key


def test_a_wrong_key_is_one_line_naming_the_apis_code_and_the_fix(fake, monkeypatch):
    monkeypatch.setenv(api.KEY_ENV, "secret_wrong_" + "1" * 32)
    with pytest.raises(ClusterError) as refused:
        LambdaProvider().offers(OfferRequest(gpus=1))
    said = str(refused.value)
    assert "\n" not in said and "global/invalid-api-key" in said and api.KEY_ENV in said
    assert "secret_wrong" not in said
    # Whatever the API sends, its words are one line.
    assert "\n" not in str(api.LambdaApiError(400, "global/x", "two\nlines.", "a\nfix."))


def test_requests_are_spaced_as_the_api_allows_and_a_429_is_waited_out(fake):
    client = api.LambdaApi(KEY)
    for _ in range(4):
        client.get("/instance-types")
    times = [t for t, *_ in fake.requests]
    assert all(s == 200 for *_, s in fake.requests), fake.requests  # never over the limit
    assert min(b - a for a, b in zip(times, times[1:], strict=False)) >= SPACING
    # Another client of the same account (not paced by us) took the slot: the 429 is waited out.
    fake._last = fake.requests[-1][0] + 5 * SPACING
    assert client.get("/instances") == []
    assert [s for *_, s in fake.requests[-2:]] == [429, 200]


def test_a_launch_refused_for_capacity_is_an_error_callers_can_tell_apart(fake):
    client = api.LambdaApi(KEY)
    body = {"region_name": "us-east-1", "instance_type_name": "gpu_8x_h100_sxm5",
            "ssh_key_names": ["burst"]}  # fmt: skip
    with pytest.raises(api.LambdaApiError) as refused:
        client.post(api.LAUNCH_PATH, body)
    assert refused.value.capacity and refused.value.status == 400
    launched = client.post(api.LAUNCH_PATH, {**body, "instance_type_name": "gpu_8x_a100"})
    assert len(launched["instance_ids"]) == 1
    launches = [t for t, method, path, _ in fake.requests if path == api.LAUNCH_PATH]
    assert launches[1] - launches[0] >= 4 * SPACING  # one launch per launch interval


def test_the_key_never_travels_in_clear_nor_comes_from_a_file_others_can_read(
    fake, monkeypatch, tmp_path
):
    monkeypatch.setenv("DASK_BURST__LAMBDA__API_URL", "http://lambda.example.org/api/v1")
    import dask.config

    dask.config.refresh()
    with pytest.raises(ClusterError, match="would travel in clear; use an https:// address"):
        api.api_url()
    monkeypatch.delenv(api.KEY_ENV)
    key_file = tmp_path / "lambda_keys"
    key_file.write_text(f"api_key = {KEY}\n")
    monkeypatch.setenv("DASK_BURST__LAMBDA__API_KEY_FILE", str(key_file))
    dask.config.refresh()
    os.chmod(key_file, 0o644)
    with pytest.raises(ClusterError, match=f"is open to other users: chmod 600 {key_file}"):
        api.api_key()
    os.chmod(key_file, 0o600)
    assert api.api_key() == KEY
    assert KEY not in repr(api.LambdaApi(KEY, fake.url))


def test_our_ssh_key_is_made_here_once_and_registered_once_under_a_name_of_its_own(fake, tmp_path):
    from jupyter_burst.clusters.lambda_cloud import login
    from jupyter_burst.clusters.ssh import keys

    private, public = keys.key_pair(tmp_path / "lambda")
    assert oct(private.stat().st_mode & 0o777) == "0o600"
    assert oct(private.parent.stat().st_mode & 0o777) == "0o700"
    assert keys.key_pair(tmp_path / "lambda") == (private, public)  # made once
    client = api.LambdaApi(KEY)
    name = login.registered_name(client, public)
    assert name == login.key_name(public) and name.startswith("jupyter-burst-")
    assert login.registered_name(client, public) == name  # found, not registered again
    assert [k["name"] for k in fake.ssh_keys] == ["burst", name]
    assert "PRIVATE" not in str(fake.ssh_keys)  # only the public half went to the API
