"""GCP's live prices (clusters/gcp/prices.py) from the Cloud Billing Catalog API, as the fake
of it lists Compute Engine's SKUs (tests/gcp_fake.py): a machine priced as the sum of its
vCPUs, memory and GPUs, on demand and as Spot, in each region that prices every part; a
shape it does not price keeps its catalog price; no GCP project, no call."""

from __future__ import annotations

import dask.config
import pytest

from jupyter_burst.clusters.gcp import GcpProvider, prices
from jupyter_burst.clusters.offers import OfferRequest
from tests.gcp_fake import PROJECT, RATES, ComputeFake


@pytest.fixture
def fake(monkeypatch):
    server = ComputeFake().start()
    monkeypatch.setenv("DASK_BURST__GCP__BILLING_ENDPOINT", server.url)
    monkeypatch.setenv("DASK_BURST__GCP__PROJECT", PROJECT)
    monkeypatch.setattr(prices, "_live", None)
    dask.config.refresh()
    yield server
    server.stop()
    monkeypatch.undo()
    dask.config.refresh()


def _price(region: str, spot: bool, vcpus: int, ram: float, core: str, memory: str, gpu: str):
    rate = {part: pair[spot] for part, pair in RATES[region].items()}
    return round(vcpus * rate[core] + ram * rate[memory] + rate[gpu], 5)


def test_live_offers_are_the_sum_of_their_parts_on_demand_and_spot_in_each_priced_region(fake):
    provider = GcpProvider()
    either = provider.offers(OfferRequest(gpus=1))
    assert provider.prices_note == "live on-demand and Spot prices from the Cloud Billing Catalog"
    got = {(o.instance_type, o.region, o.spot): o.price_per_hour for o in either}
    n1 = ("N1 Predefined Instance Core", "N1 Predefined Instance Ram", "Nvidia Tesla T4 GPU")
    for region in ("us-central1", "europe-west4"):
        for spot in (False, True):
            assert got[("n1-standard-4+t4x1", region, spot)] == _price(region, spot, 4, 15, *n1)
    g2 = ("G2 Instance Core", "G2 Instance Ram", "Nvidia L4 GPU")
    assert got[("g2-standard-4", "us-central1", True)] == _price("us-central1", True, 4, 16, *g2)
    assert ("g2-standard-4", "europe-west4", False) not in got  # no L4 price there
    # A2 is not in the fake's Catalog: its catalog price stands, on demand only.
    listed = {o.instance_type: o for o in prices.catalog_offers()}
    assert got[("a2-highgpu-1g", "us-central1", False)] == listed["a2-highgpu-1g"].price_per_hour
    assert ("a2-highgpu-1g", "us-central1", True) not in got
    # Markets as asked: spot=yes only Spot, spot=no only on demand.
    assert all(o.spot for o in provider.offers(OfferRequest(gpus=1, spot=True)))
    assert not any(o.spot for o in provider.offers(OfferRequest(gpus=1, spot=False)))
    paged = [r for r in fake.requests if r[1].endswith("/skus")]
    assert len(paged) == 2  # both pages read once; the next quote comes from memory
    provider.offers(OfferRequest(gpus=2))
    assert len([r for r in fake.requests if r[1].endswith("/skus")]) == 2


def test_without_a_project_or_a_reachable_catalog_the_shipped_prices_are_used_and_said(
    fake, monkeypatch
):
    monkeypatch.delenv("DASK_BURST__GCP__PROJECT")
    dask.config.refresh()
    provider = GcpProvider()
    offers = provider.offers(OfferRequest(gpus=1))
    assert offers and not any(o.spot for o in offers) and not fake.requests
    assert provider.prices_note.endswith("no Spot (burst.gcp.project is not set)")
    monkeypatch.setenv("DASK_BURST__GCP__PROJECT", PROJECT)
    monkeypatch.setenv("DASK_BURST__GCP__BILLING_ENDPOINT", "http://127.0.0.1:9")
    dask.config.refresh()
    provider.offers(OfferRequest(gpus=1))
    assert "no Spot (the Cloud Billing Catalog could not be reached" in provider.prices_note
