"""Offers: the cheapest way to get N GPUs, the `%burst offers` table, the shipped AWS catalog,
and live AWS prices read from a moto server process (EC2) and a Stubber (the Pricing API)."""

from __future__ import annotations

import json
import sys
import tomllib
from datetime import UTC, date, datetime, timedelta
from fnmatch import fnmatch
from pathlib import Path

import dask.config
import pytest

from jupyter_burst.clusters import registry
from jupyter_burst.clusters.aws import prices as aws_prices
from jupyter_burst.clusters.gather import gather
from jupyter_burst.clusters.offers import Offer, OfferRequest, Plan
from jupyter_burst.clusters.plans import cheapest, fits, plans
from jupyter_burst.clusters.shipped_catalog import CATALOG_DIR, load_catalog
from jupyter_burst.errors import BurstError, ClusterError, OptionError
from jupyter_burst.kernel.offer_words import parse_offers_words
from jupyter_burst.kernel.offers_report import offers_command, offers_table
from tests import aws_fakes

ROOT = Path(__file__).resolve().parents[1]


def offer(instance_type="g5.12xlarge", gpus=4, price=5.0, **kw) -> Offer:
    fields = dict(
        provider="aws",
        instance_type=instance_type,
        gpus=gpus,
        gpu_model="NVIDIA A10G",
        gpu_mem_gib=22888 / 1024,
        vcpus=12 * gpus,
        ram_gib=48.0 * gpus,
        region="us-east-1",
        spot=False,
        price_per_hour=price,
    )
    fields.update(kw)
    return Offer(**fields)


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text, text
    assert text.startswith("burst: ")
    return text


# ---- plans: the ordering rules ---------------------------------------------------------------


def test_the_cheapest_plan_comes_first():
    a = offer("a.big", gpus=8, price=30.0)
    b = offer("b.small", gpus=1, price=2.0)  # 8 nodes: $16/h
    c = offer("c.mid", gpus=4, price=9.0)  # 2 nodes: $18/h
    found = plans([a, b, c], OfferRequest(gpus=8))
    assert [(p.offer.instance_type, p.nodes, p.price_per_hour) for p in found] == [
        ("b.small", 8, 16.0),
        ("c.mid", 2, 18.0),
        ("a.big", 1, 30.0),
    ]
    assert cheapest([a, b, c], OfferRequest(gpus=8)) == Plan(b, 8)


def test_equal_prices_go_to_fewer_nodes_then_on_demand_then_name():
    one_node = offer("z.eight", gpus=8, price=16.0)
    two_nodes = offer("a.four", gpus=4, price=8.0)
    spot = offer("m.eight", gpus=8, price=16.0, spot=True, zone="us-east-1a")
    named_later = offer("y.eight", gpus=8, price=16.0)
    found = plans([two_nodes, spot, one_node, named_later], OfferRequest(gpus=8))
    assert [p.offer.instance_type for p in found] == ["y.eight", "z.eight", "m.eight", "a.four"]
    # The same offers in any order give the same plans.
    assert plans([named_later, one_node, spot, two_nodes], OfferRequest(gpus=8)) == found


def test_float_noise_does_not_break_a_price_tie():
    three_tenths = offer("b.one", gpus=1, price=0.1)  # 3 × 0.1 = 0.30000000000000004
    whole = offer("a.three", gpus=3, price=0.3)
    assert [p.offer.instance_type for p in plans([three_tenths, whole], OfferRequest(gpus=3))] == [
        "a.three",
        "b.one",
    ]


def test_gpu_mem_keeps_only_gpus_with_at_least_that_much_memory():
    t4 = offer("g4dn.12xlarge", gpu_model="NVIDIA T4", gpu_mem_gib=16.0, price=3.9)
    a100 = offer("p4d.24xlarge", gpus=8, gpu_model="NVIDIA A100", gpu_mem_gib=40.0, price=22.0)
    h100 = offer("p5.48xlarge", gpus=8, gpu_model="NVIDIA H100", gpu_mem_gib=80.0, price=55.0)
    assert [p.offer for p in plans([t4, a100, h100], OfferRequest(gpus=8, gpu_mem_gib=40))] == [
        a100,
        h100,
    ]
    assert [p.offer for p in plans([t4, a100, h100], OfferRequest(gpus=8, gpu_mem_gib=80))] == [
        h100
    ]
    assert fits(a100, OfferRequest(gpus=1, gpu_mem_gib=40))  # exactly enough is enough


def test_spot_yes_no_or_either():
    od = offer("g5.12xlarge", price=5.67)
    sp = offer("g5.12xlarge", price=2.10, spot=True, zone="us-east-1b")
    assert [p.offer for p in plans([od, sp], OfferRequest(gpus=4, spot=True))] == [sp]
    assert [p.offer for p in plans([od, sp], OfferRequest(gpus=4, spot=False))] == [od]
    assert [p.offer for p in plans([od, sp], OfferRequest(gpus=4))] == [sp, od]


def test_regions_keep_only_offers_there():
    east = offer(price=5.0)
    west = offer(price=4.0, region="us-west-2")
    eu = offer(price=3.0, region="eu-west-1")
    request = OfferRequest(gpus=4, regions=("us-east-1", "us-west-2"))
    assert [p.offer for p in plans([east, west, eu], request)] == [west, east]


def test_multi_node_plans_round_up_to_whole_machines():
    four = offer("g5.12xlarge", gpus=4, price=5.672)
    eight = offer("g5.48xlarge", gpus=8, price=16.288)
    one = offer("g5.xlarge", gpus=1, price=1.006)
    by_type = {p.offer.instance_type: p for p in plans([four, eight, one], OfferRequest(gpus=6))}
    assert (by_type["g5.12xlarge"].nodes, by_type["g5.12xlarge"].gpus) == (2, 8)
    assert (by_type["g5.48xlarge"].nodes, by_type["g5.48xlarge"].gpus) == (1, 8)
    assert (by_type["g5.xlarge"].nodes, by_type["g5.xlarge"].gpus) == (6, 6)
    assert by_type["g5.12xlarge"].price_per_hour == pytest.approx(11.344)
    # A machine bigger than asked for is still one way to get the GPUs.
    assert plans([eight], OfferRequest(gpus=1))[0].nodes == 1


def test_nothing_fits_says_what_was_asked_and_the_closest_in_one_line():
    t4 = offer("g4dn.12xlarge", gpu_model="NVIDIA T4", gpu_mem_gib=16.0, price=3.912)
    h100 = offer("p5.48xlarge", gpus=8, gpu_model="NVIDIA H100", gpu_mem_gib=80.0, price=55.04)
    with pytest.raises(ClusterError) as info:
        cheapest([t4, h100], OfferRequest(gpus=8, gpu_mem_gib=100))
    assert one_line(info.value) == (
        "burst: nothing offers 8 GPUs with >= 100 GiB each; closest: p5.48xlarge "
        "(8 × NVIDIA H100 80 GiB) on-demand in us-east-1 at $55.04/h; "
        "to get it, ask gpu_mem=80 or less (the most on offer)"
    )

    with pytest.raises(ClusterError) as info:
        cheapest([t4, h100], OfferRequest(gpus=8, spot=True, regions=("us-east-1",)))
    text = one_line(info.value)
    assert text.startswith("burst: nothing offers 8 GPUs, spot, in us-east-1; closest: ")
    assert "g4dn.12xlarge × 2 (8 × NVIDIA T4 16 GiB) on-demand" in text
    assert text.endswith("to get it, ask spot=no")

    with pytest.raises(ClusterError) as info:
        cheapest([], OfferRequest(gpus=1))
    assert "burst.providers" in one_line(info.value)


def test_describe_is_one_line_and_says_notional():
    plan = Plan(offer("g5.12xlarge", price=2.1, spot=True), 2)
    assert plan.describe() == (
        "g5.12xlarge × 2 (8 × NVIDIA A10G 22.3 GiB) spot in us-east-1 at $4.20/h"
    )
    local = Offer(
        "local", "this-machine", 2, "NVIDIA H100", 80, 32, 256, "local", False, 0.8, notional=True
    )
    assert Plan(local, 1).describe() == (
        "this-machine (2 × NVIDIA H100 80 GiB) on-demand in local at $0.80/h (notional)"
    )
    zoned = Plan(offer("g4dn.xlarge", gpus=1, price=0.1578, spot=True, zone="us-east-1c"), 1)
    assert zoned.describe().endswith("spot in us-east-1c at $0.158/h")


# ---- the table -------------------------------------------------------------------------------


def test_table_columns_totals_notional_marks_and_catalog_date():
    spot = offer("g5.12xlarge", price=2.1, spot=True, zone="us-east-1b")
    big = offer(
        "p5.48xlarge",
        gpus=8,
        gpu_model="NVIDIA H100",
        gpu_mem_gib=80,
        vcpus=192,
        ram_gib=2048,
        price=55.04,
    )
    local = Offer(
        "local", "this-machine", 8, "NVIDIA H100", 80, 64, 512, "local", False, 1.5, notional=True
    )
    text = str(
        offers_table(
            plans([spot, big, local], OfferRequest(gpus=8)), catalog_date=date(2026, 11, 25)
        )
    )
    assert text.splitlines()[:4] == [
        "provider  instance         GPUs  GPU           GPU mem  vCPUs       RAM  region      market        $/h",
        "local     this-machine        8  NVIDIA H100    80 GiB     64   512 GiB  local       on-demand   1.50*",
        "aws       g5.12xlarge × 2     8  NVIDIA A10G  22.3 GiB     96   384 GiB  us-east-1b  spot        4.20",
        "aws       p5.48xlarge         8  NVIDIA H100    80 GiB    192  2048 GiB  us-east-1   on-demand  55.04",
    ]
    assert "* notional: a configured internal price, not a bill." in text
    assert "Prices from the shipped catalog of 2026-11-25." in text
    assert "GPU mem is per GPU" in text


def test_table_limit_counts_the_rows_left_out():
    many = [offer(f"t{i}.x", gpus=1, price=1.0 + i) for i in range(5)]
    table = offers_table(plans(many, OfferRequest(gpus=1)), limit=2)
    text = str(table)
    assert "t0.x" in text and "t1.x" in text and "t2.x" not in text
    assert "3 more not shown; narrow with gpu_mem=, spot= or region=" in text
    # Only the text is cut: the returned value keeps every plan.
    assert [p.offer.instance_type for p in table] == [f"t{i}.x" for i in range(5)]
    assert "notional" not in text


# ---- %burst offers ---------------------------------------------------------------------------


def test_offers_words_parse_into_a_request():
    assert parse_offers_words(["gpus=8"]) == OfferRequest(gpus=8)
    assert parse_offers_words(
        ["gpus=8", "gpu_mem=40", "spot=yes", "region=us-east-1,eu-west-1"]
    ) == OfferRequest(gpus=8, gpu_mem_gib=40.0, spot=True, regions=("us-east-1", "eu-west-1"))
    assert parse_offers_words(["spot", "gpus=1"]).spot is True
    assert parse_offers_words(["gpus=1", "spot=no"]).spot is False
    assert parse_offers_words(["gpus=1", "spot=any"]).spot is None
    assert parse_offers_words(["gpus=2", "gpu_mem=22.3"]).gpu_mem_gib == 22.3


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (
            [],
            "burst: say how many GPUs: %burst offers gpus=8 [gpu_mem=40] [spot=yes|no] [region=us-east-1,...]",
        ),
        (
            ["gpu=8"],
            "burst: unknown option 'gpu' (did you mean 'gpus'?); write %burst offers gpus=8",
        ),
        (["gpus=8", "gpumem=40"], "burst: unknown option 'gpumem' (did you mean 'gpu_mem'?)"),
        (["gpus=8", "regoin=us-east-1"], "(did you mean 'region'?)"),
        (["gpus=8", "fast"], "burst: 'fast' is not an option; write %burst offers gpus=8"),
        (["gpus=8", "gpus=4"], "burst: option 'gpus' is given twice; keep one"),
        (["gpus"], "burst: option 'gpus' needs a value: write gpus=..."),
        (["gpus="], "burst: option 'gpus' needs a value: write gpus=..."),
        (["gpus=eight"], "burst: gpus=eight is not a whole number; write e.g. gpus=8"),
        (["gpus=0"], "burst: gpus=0 is out of range: from 1 to 1024"),
        (
            ["gpus=auto"],
            "burst: gpus=auto needs a model; %burst offers takes a number, e.g. gpus=8",
        ),
        (
            ["gpus=8", "gpu_mem=40GB"],
            "burst: gpu_mem=40GB is not a number of GiB per GPU; write e.g. gpu_mem=40",
        ),
        (["gpus=8", "gpu_mem=-1"], "burst: gpu_mem=-1 is out of range"),
        (
            ["gpus=8", "spot=maybe"],
            "burst: spot=maybe is not yes, no or any; write spot=yes or spot=no",
        ),
        (["gpus=8", "region=US East"], "burst: region=US East: 'US East' is not a region name"),
        (["gpus=8", "region=us-east-1,,eu-west-1"], "'' is not a region name"),
        (
            ["gpus=8", "region=us-east-1,us-east-1"],
            "burst: region=us-east-1,us-east-1 names a region twice",
        ),
    ],
)
def test_offers_words_mistakes_are_one_line_errors(words, message):
    with pytest.raises(OptionError) as info:
        parse_offers_words(words)
    assert message in one_line(info.value)


class _Priced:
    """A provider that answers offers (the registry hands out one instance per name)."""

    def __init__(self, name, offers, note=None):
        self.name, self._offers, self.asked = name, offers, []
        if note is not None:
            self.prices_note = note

    def offers(self, request):
        self.asked.append(request)
        return list(self._offers)


class _NoOffers:
    name = "old"  # a provider written before offers existed


@pytest.fixture
def providers(monkeypatch):
    """Install providers by name for gather() and offers_command(); burst.providers lists them."""
    installed = {}

    def get_provider(name):
        if name not in installed:
            raise OptionError(f"unknown provider '{name}'; known: {', '.join(sorted(installed))}")
        return installed[name]

    monkeypatch.setattr(registry, "get_provider", get_provider)

    def install(**named):
        installed.update(named)
        return dask.config.set({"burst.providers": list(named)})

    return install


def test_gather_asks_every_enabled_provider_and_skips_those_without_offers(providers):
    aws = _Priced("aws", [offer(price=5.0)])
    onprem = _Priced(
        "ssh", [offer("rack1", gpus=8, provider="ssh", region="dc1", price=0.0, notional=True)]
    )
    with providers(old=_NoOffers(), aws=aws, ssh=onprem):
        request = OfferRequest(gpus=8, regions=("us-east-1",))
        found = gather(request)
    assert [o.instance_type for o in found] == ["g5.12xlarge", "rack1"]
    assert aws.asked == [request] and onprem.asked == [request]


def test_providers_may_come_from_an_environment_string(providers):
    with providers(aws=_Priced("aws", [offer()])), dask.config.set({"burst.providers": "old, aws"}):
        with pytest.raises(OptionError) as info:
            gather(OfferRequest(gpus=1))
    assert one_line(info.value) == "burst: burst.providers: unknown provider 'old'; known: aws"


def test_lists_of_names_read_the_same_from_yaml_and_from_an_environment_string():
    from jupyter_burst.clusters.lambda_cloud.prices import configured_regions

    for written in (["us-east-1", "eu-west-1"], "us-east-1, eu-west-1", "[us-east-1, eu-west-1]"):
        with dask.config.set({"burst.aws.regions": written, "burst.lambda.regions": written}):
            assert aws_prices.default_regions() == ("us-east-1", "eu-west-1"), written
            assert configured_regions() == ("us-east-1", "eu-west-1"), written
    with dask.config.set({"burst.aws.regions": None}):  # none set: the catalog's regions
        assert set(aws_prices.default_regions()) == {o.region for o in load_catalog("aws")[1]}


def test_offers_command_prints_the_table_with_where_prices_come_from(providers):
    _, catalog = load_catalog("aws")
    aws = _Priced("aws", catalog)
    with providers(old=_NoOffers(), aws=aws):
        text = str(offers_command(["gpus=8", "gpu_mem=40", "region=us-east-1"]))
    lines = text.splitlines()
    assert lines[0] == "Offers for 8 GPUs with >= 40 GiB each, in us-east-1, cheapest first:"
    assert lines[1].split() == [
        "provider",
        "instance",
        "GPUs",
        "GPU",
        "GPU",
        "mem",
        "vCPUs",
        "RAM",
        "region",
        "market",
        "$/h",
    ]
    rows = [line.split()[1] for line in lines[2:] if line.startswith("aws ")]
    assert rows == ["g6e.xlarge", "g6e.12xlarge", "p4d.24xlarge", "g6e.48xlarge", "p5.48xlarge"]
    when = load_catalog("aws")[0].isoformat()
    assert f"aws: on-demand list prices from the shipped catalog of {when}" in lines


def test_offers_command_uses_a_providers_own_price_note(providers):
    with providers(
        aws=_Priced("aws", [offer()], note=lambda: "live AWS prices fetched 2026-11-25 08:00 UTC")
    ):
        text = str(offers_command(["gpus=4"]))
    assert text.splitlines()[-1] == "aws: live AWS prices fetched 2026-11-25 08:00 UTC"


def test_offers_command_with_nothing_that_fits_raises_one_line(providers):
    with providers(aws=_Priced("aws", [offer()])), pytest.raises(ClusterError) as info:
        offers_command(["gpus=4", "spot=yes"])
    assert one_line(info.value).endswith("to get it, ask spot=no")
    with providers(old=_NoOffers()), pytest.raises(ClusterError) as info:
        offers_command(["gpus=4"])
    assert "no enabled provider has offers" in one_line(info.value)


# ---- the shipped catalog ---------------------------------------------------------------------


def test_catalog_loads_with_its_date_and_every_entry_is_sane():
    when, catalog = load_catalog("aws")
    assert date(2024, 1, 1) <= when <= date.today()
    assert catalog, "the catalog has no priced offers"
    for o in catalog:
        assert o.provider == "aws" and not o.spot and not o.notional and o.zone is None
        assert o.gpus in (1, 2, 4, 8), o
        assert o.gpu_model.startswith("NVIDIA "), o
        assert 8 <= o.gpu_mem_gib <= 192, o  # T4 16 GiB up to H200 141 GiB
        assert o.vcpus >= 4 * o.gpus and o.ram_gib >= 8 * o.gpus, o
        assert 0.1 <= o.price_per_hour / o.gpus <= 20, o  # $/GPU-hour of any GPU AWS rents
    # Per-GPU price grows with the GPU generation, never the other way round in one region.
    per_gpu = {(o.instance_type, o.region): o.price_per_hour / o.gpus for o in catalog}
    assert per_gpu["g4dn.xlarge", "us-east-1"] < per_gpu["g5.xlarge", "us-east-1"]
    assert per_gpu["p4d.24xlarge", "us-east-1"] < per_gpu["p5.48xlarge", "us-east-1"]


def test_catalog_covers_each_family_with_1_4_and_8_gpu_sizes_and_says_its_source():
    import yaml

    data = yaml.safe_load((CATALOG_DIR / "aws.yaml").read_text())
    assert data["source"].strip() and "NOT VERIFIED" in data["source"]
    types = data["instance_types"]
    for family in data["families"]:
        sizes = {spec["gpus"] for name, spec in types.items() if name.split(".")[0] == family}
        expected = {8} if family == "p4d" else {1, 4, 8} - ({4} if family == "p5" else set())
        assert expected <= sizes, (family, sizes)
    for region, prices in data["on_demand"].items():
        assert set(prices) <= set(types), region
    priced = {o.instance_type for o in load_catalog("aws")[1]}
    assert {
        "g4dn.xlarge",
        "g5.12xlarge",
        "g6.48xlarge",
        "g6e.xlarge",
        "p3.8xlarge",
        "p4d.24xlarge",
        "p5.48xlarge",
    } <= priced


def test_catalog_yaml_ships_in_the_wheel():
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]
    patterns = build["targets"]["wheel"]["include"]
    path = (CATALOG_DIR / "aws.yaml").relative_to(ROOT).as_posix()
    assert any(fnmatch(path, pattern) for pattern in patterns), patterns


# ---- live AWS prices: a moto server process and a Stubber ---------------------------------------


@pytest.fixture(scope="module")
def moto_server():
    """A moto server process on 127.0.0.1; its URL. Stopped (and reaped) after the module."""
    with aws_fakes.moto_server() as url:
        yield url


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """Dummy credentials and no way to reach a real AWS (no profile files, no metadata service)."""
    for name in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_EC2",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


_NOW = datetime.now(UTC)
# Real-looking spot prices per type (moto serves one fixed price, 0.00001, for every type).
_SPOT = {"p5.48xlarge": 21.5, "p5.4xlarge": 2.9, "g6e.xlarge": 0.62}


def _inject_spot_prices(parsed, **_):
    """after-call handler: real-looking spot prices, and an older record that must lose to the newest."""
    history = parsed.get("SpotPriceHistory", [])
    for i, item in enumerate(history):
        item["SpotPrice"] = f"{_SPOT.get(item['InstanceType'], 1.0) * (1 + i % 3 / 100):.4f}"
        item["Timestamp"] = _NOW
        item["ProductDescription"] = "Linux/UNIX"
    if history:
        stale = dict(history[0], SpotPrice="99.0000", Timestamp=_NOW - timedelta(hours=2))
        windows = dict(history[0], SpotPrice="50.0000", ProductDescription="Windows")
        history.extend([stale, windows])


def _price_item(instance_type: str, region: str, usd: str, usage: str = "BoxUsage") -> str:
    sku = f"SKU{abs(hash((instance_type, region, usage))) % 10**8}"
    return json.dumps(
        {
            "product": {
                "sku": sku,
                "attributes": {
                    "instanceType": instance_type,
                    "regionCode": region,
                    "operatingSystem": "Linux",
                    "tenancy": "Shared",
                    "usagetype": f"{usage}:{instance_type}",
                },
            },
            "terms": {
                "OnDemand": {
                    f"{sku}.JRTCKXETXF": {
                        "priceDimensions": {
                            f"{sku}.JRTCKXETXF.6YS6EN2CT7": {
                                "unit": "Hrs",
                                "pricePerUnit": {"USD": usd},
                            }
                        }
                    }
                }
            },
        }
    )


# What the Pricing API answers per type: eu-west-1 has g6e but no p5, ap-south-1 is not asked for.
_ON_DEMAND = {
    "g6e.xlarge": [
        ("us-east-1", "1.8610000000"),
        ("eu-west-1", "2.0940000000"),
        ("ap-south-1", "1.9000000000"),
    ],
    "p5.48xlarge": [("us-east-1", "55.0400000000"), ("us-east-1", "70.0000000000")],
    "p5.4xlarge": [("us-east-1", "6.8800000000")],
}


def _session_with_stubbed_pricing(monkeypatch, types: list[str]):
    """A real boto3 session whose EC2 calls get real-looking spot prices and whose Pricing API
    client is stubbed (moto has no Pricing API), expecting one get_products call per type."""
    import boto3
    from botocore.stub import Stubber

    session = boto3.Session(region_name="us-east-1")
    session.events.register("after-call.ec2.DescribeSpotPriceHistory", _inject_spot_prices)
    pricing = session.client("pricing", region_name="us-east-1")
    stubber = Stubber(pricing)
    for instance_type in types:
        items = [
            _price_item(
                instance_type, region, usd, usage="BoxUsage" if i == 0 else "DedicatedUsage"
            )
            for i, (region, usd) in enumerate(_ON_DEMAND.get(instance_type, []))
        ]
        stubber.add_response(
            "get_products",
            {"FormatVersion": "aws_v1", "PriceList": items},
            {"ServiceCode": "AmazonEC2", "Filters": aws_prices.pricing_filters(instance_type)},
        )
    stubber.activate()
    real_client = session.client

    def client(service, **kw):
        return pricing if service == "pricing" else real_client(service, **kw)

    monkeypatch.setattr(session, "client", client)
    return session, stubber


def test_refresh_reads_gpu_specs_spot_per_zone_and_on_demand_prices(
    moto_server, aws_env, monkeypatch
):
    g6e_types = [
        f"g6e.{size}"
        for size in (
            "xlarge",
            "2xlarge",
            "4xlarge",
            "8xlarge",
            "12xlarge",
            "16xlarge",
            "24xlarge",
            "48xlarge",
        )
    ]
    types = sorted(g6e_types + ["p5.4xlarge", "p5.48xlarge"])
    session, stubber = _session_with_stubbed_pricing(monkeypatch, types)

    found = aws_prices.refresh(
        session, ["us-east-1", "eu-west-1"], families=["g6e", "p5"], endpoint_url=moto_server
    )
    stubber.assert_no_pending_responses()

    on_demand = {(o.instance_type, o.region): o for o in found if not o.spot}
    assert sorted(on_demand) == [
        ("g6e.xlarge", "eu-west-1"),
        ("g6e.xlarge", "us-east-1"),
        ("p5.48xlarge", "us-east-1"),
        ("p5.4xlarge", "us-east-1"),
    ]
    p5 = on_demand["p5.48xlarge", "us-east-1"]
    assert p5 == Offer(
        provider="aws",
        instance_type="p5.48xlarge",
        gpus=8,
        gpu_model="NVIDIA H100",
        gpu_mem_gib=80.0,
        vcpus=192,
        ram_gib=2048.0,
        region="us-east-1",
        spot=False,
        price_per_hour=55.04,  # the lower of the two products that pass the filters
    )
    assert on_demand["g6e.xlarge", "eu-west-1"].price_per_hour == 2.094
    assert on_demand["g6e.xlarge", "us-east-1"].gpu_mem_gib == pytest.approx(44.70, abs=0.01)

    spot = [o for o in found if o.spot]
    assert spot and all(o.zone and o.zone.startswith(o.region) for o in spot)
    assert {o.region for o in spot} == {"us-east-1"}  # moto offers none of these in eu-west-1
    zones = [(o.instance_type, o.zone) for o in spot]
    assert len(zones) == len(set(zones)), "one spot offer per type and zone"
    p5_spot = [o for o in spot if o.instance_type == "p5.48xlarge"]
    assert p5_spot and all(21.5 <= o.price_per_hour < 22 for o in p5_spot)  # the newest, not 99
    assert max(o.price_per_hour for o in spot) < 50  # no Windows price

    # The offers make plans like any other.
    plan = cheapest(found, OfferRequest(gpus=8, gpu_mem_gib=80, spot=True))
    assert plan.offer.instance_type == "p5.48xlarge" and plan.nodes == 1


def test_live_offers_are_cached_in_the_state_folder_until_they_are_too_old(
    moto_server, aws_env, monkeypatch, tmp_path
):
    monkeypatch.setattr(aws_prices, "catalog_families", lambda: ("p5",))
    types = ["p5.48xlarge", "p5.4xlarge"]
    calls = []
    t0 = 1_800_000_000.0

    def fetch(at, session):
        return aws_prices.live_offers(
            ["us-east-1"],
            session=session,
            state_dir=tmp_path,
            max_age_hours=24,
            endpoint_url=moto_server,
            now=lambda: at,
        )

    session, stubber = _session_with_stubbed_pricing(monkeypatch, types)
    session.events.register("before-call.ec2", lambda **kw: calls.append(kw["event_name"]))
    first, fetched_at = fetch(t0, session)
    stubber.assert_no_pending_responses()
    assert fetched_at == t0 and first and calls
    cache = json.loads((tmp_path / "prices" / "aws.json").read_text())
    assert cache["fetched_at"] == t0 and cache["regions"] == ["us-east-1"]

    calls.clear()
    again, fetched_again = fetch(t0 + 23 * 3600, session)  # a stub left unused would be called
    assert (again, fetched_again) == (first, t0) and calls == []

    session, stubber = _session_with_stubbed_pricing(monkeypatch, types)
    later, fetched_later = fetch(t0 + 25 * 3600, session)
    stubber.assert_no_pending_responses()
    assert fetched_later == t0 + 25 * 3600 and later == first


def test_an_aws_refusal_is_one_line_naming_the_permission(moto_server, aws_env, monkeypatch):
    import boto3
    from botocore.stub import Stubber

    session = boto3.Session(region_name="us-east-1")
    pricing = session.client("pricing", region_name="us-east-1")
    stubber = Stubber(pricing)
    stubber.add_client_error("get_products", "AccessDeniedException", "not authorized")
    stubber.activate()
    real_client = session.client
    monkeypatch.setattr(
        session, "client", lambda s, **kw: pricing if s == "pricing" else real_client(s, **kw)
    )
    with pytest.raises(ClusterError) as info:
        aws_prices.refresh(session, ["us-east-1"], families=["p5"], endpoint_url=moto_server)
    text = one_line(info.value)
    assert text.startswith("burst: AWS prices could not be read (pricing:GetProducts: ")
    assert "allow pricing:GetProducts" in text


def test_without_credentials_the_catalog_answers_and_says_so(aws_env, monkeypatch, tmp_path):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    found, note = aws_prices.current(["us-east-1"], state_dir=tmp_path)
    when, catalog = load_catalog("aws")
    assert found == [o for o in catalog if o.region == "us-east-1"]
    assert note == (
        f"on-demand list prices from the shipped catalog of {when.isoformat()}, "
        "no spot prices (no AWS credentials)"
    )
    assert not (tmp_path / "prices").exists()
    with pytest.raises(ClusterError) as info:
        import boto3

        aws_prices.refresh(boto3.Session(), ["us-east-1"])
    assert "no AWS credentials found" in one_line(info.value)


def test_without_boto3_the_hint_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 now raises ImportError
    with pytest.raises(BurstError) as info:
        aws_prices.boto3_module()
    assert one_line(info.value) == (
        "burst: the aws provider needs boto3; install it with: pip install 'jupyter-burst[aws]'"
    )
    found, note = aws_prices.current([], state_dir=tmp_path)
    assert {o.region for o in found} == set(aws_prices.default_regions())
    assert note.endswith(
        "(the aws provider needs boto3; install it with: pip install 'jupyter-burst[aws]')"
    )


def test_when_aws_cannot_be_reached_the_catalog_answers_with_the_reason(aws_env, tmp_path):
    import boto3

    nobody = f"http://127.0.0.1:{aws_fakes.free_port()}"  # nothing listens there
    found, note = aws_prices.current(
        ["us-east-1"], session=boto3.Session(), state_dir=tmp_path, endpoint_url=nobody
    )
    assert found == [o for o in load_catalog("aws")[1] if o.region == "us-east-1"]
    assert (
        "no spot prices (AWS prices could not be read (ec2:DescribeInstanceTypes in us-east-1: "
        in note
    )
    assert "check the network, or unset the credentials to use the shipped catalog" in note


def test_this_machines_gpus_are_offered_with_their_model_and_memory(tmp_path, monkeypatch):
    """A local GPU qualifies for gpu_mem= (and a gpus=auto estimate) by its real memory."""
    from jupyter_burst.clusters.local import LocalProvider
    from tests.fake_nvml import fake_nvml

    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(["NVIDIA A100-SXM4-40GB"] * 2, 40))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    (offer,) = LocalProvider().offers(OfferRequest(gpus=2))
    assert (offer.gpu_model, offer.gpu_mem_gib, offer.gpus) == ("NVIDIA A100-SXM4-40GB", 40.0, 2)
    assert fits(offer, OfferRequest(gpus=2, gpu_mem_gib=40)) and not fits(
        offer, OfferRequest(gpus=2, gpu_mem_gib=80)
    )
    assert LocalProvider().offers(OfferRequest(gpus=4)) == []  # only 2 GPUs here


def test_a_failed_price_lookup_is_not_paid_for_again_within_minutes(monkeypatch, tmp_path):
    """A launch asks twice (its plan, then the same shape's alternatives): a lookup that failed
    (its retries take seconds) answers from the catalog at once the second time."""
    asked = []

    def failing(regions, **kwargs):
        asked.append(regions)
        raise ClusterError("AWS prices could not be read (pricing:GetProducts: throttled)")

    monkeypatch.setattr(aws_prices, "live_offers", failing)
    first = aws_prices.current(["us-east-1"], state_dir=tmp_path)
    second = aws_prices.current(["us-east-1"], state_dir=tmp_path)
    assert first == second and "pricing:GetProducts: throttled" in first[1]
    assert len(asked) == 1
    monkeypatch.setattr(aws_prices, "_FAILED_SECONDS", 0.0)  # minutes later: asked again
    aws_prices.current(["us-east-1"], state_dir=tmp_path)
    assert len(asked) == 2
