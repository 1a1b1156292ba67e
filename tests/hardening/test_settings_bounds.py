"""Settings that reach money, paths or the network are checked as strictly as the options of
a %%burst line (issue #18): an unbounded retries count, a cluster name from the settings, a
client address range wider than a site's, a launch above the hourly cap."""

from __future__ import annotations

import pathlib
from decimal import Decimal

import pytest

from jupyter_burst import config
from jupyter_burst.clusters import launch_checks
from jupyter_burst.clusters.client_cidr import client_cidr
from jupyter_burst.errors import BudgetExceeded, ClusterError, OptionError
from jupyter_burst.kernel.options import parse


@pytest.fixture
def settings(monkeypatch):
    def set_(name: str, value: str) -> None:
        monkeypatch.setenv(f"DASK_BURST__{name}", value)
        config.refresh()

    yield set_
    monkeypatch.undo()
    config.refresh()


def test_retries_are_bounded_on_the_line_and_in_the_settings(settings):
    assert parse("retries=10").retries == 10
    with pytest.raises(OptionError, match=r"^burst: retries=11 is out of range: at most 10 "):
        parse("retries=11")
    settings("RETRIES", "1000")
    with pytest.raises(OptionError, match=r"^burst: burst\.retries=1000 is out of range"):
        parse("")


def test_a_cluster_name_from_the_settings_is_checked_like_one_on_the_line(settings):
    settings("CLUSTER", "a; rm -rf ~")
    with pytest.raises(OptionError) as refused:
        parse("")
    assert str(refused.value).startswith("burst: burst.cluster=a; rm -rf ~ is not a valid name")
    assert parse("cluster=mine").cluster == "mine"  # the line's own name still wins


@pytest.mark.parametrize(
    ("cidr", "said"),
    [
        ("0.0.0.0/0", "to the whole internet; give your own address as a /32"),
        ("0.0.0.0/1", "to 2,147,483,648 addresses"),
        ("10.0.0.0/8", "to 16,777,216 addresses"),
        ("::/0", "to the whole internet"),
        ("2001:db8::/32", "addresses; give your own address as a /32"),
        ("my laptop", "is not an address range"),
    ],
)
def test_a_client_range_wider_than_a_site_or_not_a_range_is_refused(settings, cidr, said):
    settings("AWS__CLIENT_CIDR", cidr)
    with pytest.raises(ClusterError) as refused:
        client_cidr("aws")
    assert said in str(refused.value) and "\n" not in str(refused.value)


def test_an_own_address_or_a_sites_range_is_taken(settings):
    settings("AWS__CLIENT_CIDR", "203.0.113.7/32")
    assert client_cidr("aws") == "203.0.113.7/32"
    settings("AWS__CLIENT_CIDR", "198.51.0.0/16")
    assert client_cidr("aws") == "198.51.0.0/16"


class _Quoting:
    """A provider whose launch costs ``price`` an hour (as the AWS provider quotes one)."""

    name = "aws"

    def __init__(self, price: float):
        self.price = price

    def price_per_hour(self, request) -> float:
        return self.price


def _request(max_hourly=None):
    from jupyter_burst.clusters.provider import ClusterRequest

    return ClusterRequest("big", 8, 20.0, pathlib.Path("."), max_hourly=max_hourly)


def test_a_launch_above_the_hourly_cap_starts_only_when_its_cell_agrees(settings):
    fleet = _Quoting(32.77)  # a p4d.24xlarge: what gpus=8 on AWS gets
    with pytest.raises(BudgetExceeded) as refused:
        launch_checks.check_hourly_cap(fleet, _request())
    assert str(refused.value) == (
        "burst: this launch would cost $32.77/h, more than $20.00/h (burst.max-hourly); "
        "nothing was started. To go ahead, say so on the line: max_hourly=33"
    )
    assert parse("gpus=8 max_hourly=33").max_hourly == Decimal(33)
    launch_checks.check_hourly_cap(fleet, _request(max_hourly=33.0))  # agreed on the line
    with pytest.raises(BudgetExceeded, match=r"more than \$30\.00/h \(max_hourly= on its line\)"):
        launch_checks.check_hourly_cap(fleet, _request(max_hourly=30.0))
    on_prem = _Quoting(400.0)
    on_prem.name = "ssh"  # a chargeback price, not a bill: no cap
    launch_checks.check_hourly_cap(on_prem, _request())
    settings("MAX_HOURLY", "50")
    launch_checks.check_hourly_cap(fleet, _request())
    settings("MAX_HOURLY", "lots")
    with pytest.raises(OptionError, match=r"^burst: burst\.max-hourly=lots is not an amount"):
        launch_checks.check_hourly_cap(fleet, _request())
