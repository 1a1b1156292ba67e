"""Settings that reach money, paths or the network are checked as strictly as the options of
a %%burst line (issue #18): an unbounded retries count, a cluster name from the settings, a
client address range wider than a site's."""

from __future__ import annotations

import pytest

from jupyter_burst import config
from jupyter_burst.clusters import aws
from jupyter_burst.errors import ClusterError, OptionError
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
        ("0.0.0.0/0", "to 4,294,967,296 addresses"),
        ("0.0.0.0/1", "to 2,147,483,648 addresses"),
        ("10.0.0.0/8", "to 16,777,216 addresses"),
        ("::/0", "addresses; give your own address as a /32"),
        ("my laptop", "is not an address range"),
    ],
)
def test_a_client_range_wider_than_a_site_or_not_a_range_is_refused(settings, cidr, said):
    settings("AWS__CLIENT_CIDR", cidr)
    with pytest.raises(ClusterError) as refused:
        aws._client_cidr()
    assert said in str(refused.value) and "\n" not in str(refused.value)


def test_an_own_address_or_a_sites_range_is_taken(settings):
    settings("AWS__CLIENT_CIDR", "203.0.113.7/32")
    assert aws._client_cidr() == "203.0.113.7/32"
    settings("AWS__CLIENT_CIDR", "198.51.0.0/16")
    assert aws._client_cidr() == "198.51.0.0/16"
