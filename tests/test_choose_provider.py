"""A plain ``%%burst gpus=N`` with several providers enabled: the cheapest offer, said before it starts.

The rule (never this machine's CPU stand-in over real GPUs; the closest offer when nothing
fits), the AWS provider honouring the chosen plan and the cell's spot=/gpu_mem=/region=,
and, in a real kernel, the worked third-party provider of ``tests/example_provider``
installed the way a user installs one: a package with one entry point.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dask.config
import pytest

from jupyter_burst.clusters import choose, records, registry
from jupyter_burst.clusters.aws import AwsProvider
from jupyter_burst.clusters.offers import Offer, OfferRequest, Plan
from jupyter_burst.clusters.provider import ClusterRequest
from jupyter_burst.driver import cluster, placement
from jupyter_burst.errors import ClusterError, OptionError
from jupyter_burst.kernel.options import parse
from tests.harness import REPO, burst_kernel, cluster_record

EXAMPLE = REPO / "tests" / "example_provider"


def offer(provider="aws", instance_type="g5.12xlarge", gpus=4, price=5.0, **kw) -> Offer:
    fields = dict(
        provider=provider,
        instance_type=instance_type,
        gpus=gpus,
        gpu_model="NVIDIA A10G",
        gpu_mem_gib=22888 / 1024,
        vcpus=48,
        ram_gib=192.0,
        region="us-east-1",
        spot=False,
        price_per_hour=price,
    )
    fields.update(kw)
    return Offer(**fields)


CPU_SLOTS = offer(
    "local", "this machine", gpus=8, price=0.0, gpu_model=choose.CPU_SLOTS, gpu_mem_gib=0.0,
    region="local", notional=True,
)  # fmt: skip


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text.startswith("burst: ") and "\n" not in text, text
    return text


# ---- the rule ------------------------------------------------------------------------------


def test_the_cheapest_real_gpus_win_and_this_machines_cpu_slots_never_do():
    cheap = offer("example", "example.2gpu", gpus=2, price=0.5, region="example-1")
    aws = offer(price=5.0)
    plan = choose.choose([CPU_SLOTS, aws, cheap], OfferRequest(gpus=4), ["local", "aws", "example"])
    assert (plan.offer.provider, plan.nodes, plan.price_per_hour) == ("example", 2, 1.0)
    # this machine with CUDA GPUs at its notional $0 is a real GPU offer: it wins
    here = offer("local", "this machine", price=0.0, gpu_model="CUDA GPU", notional=True)
    assert choose.choose([aws, here], OfferRequest(gpus=4), ["local", "aws"]).offer is here


def test_only_cpu_slots_is_one_line_that_says_how_to_run_there_or_add_gpus():
    with pytest.raises(ClusterError) as info:
        choose.choose([CPU_SLOTS], OfferRequest(gpus=2), ["local", "ssh"])
    assert one_line(info.value) == (
        "burst: no provider in burst.providers (local, ssh) offers GPUs for 2 GPUs; this machine "
        "has CPU slots only (provider=local runs there); add one that does to burst.providers, "
        "e.g. [local, aws]"
    )


def test_nothing_fits_names_the_closest_offer_and_how_to_widen_the_request():
    with pytest.raises(ClusterError) as info:
        choose.choose([CPU_SLOTS, offer()], OfferRequest(gpus=8, gpu_mem_gib=40), ["local", "aws"])
    assert one_line(info.value).endswith(
        "closest: g5.12xlarge × 2 (8 × NVIDIA A10G 22.3 GiB) on-demand in us-east-1 at $10.00/h; "
        "to get it, ask gpu_mem=22.3 or less (the most on offer)"
    )


def test_the_announcement_names_provider_offer_market_region_and_price():
    plan = Plan(offer("aws", "g5.48xlarge", gpus=8, price=16.288), 1)
    assert choose.announcement(plan, OfferRequest(gpus=8)) == (
        "burst: cheapest offer for 8 GPUs: aws g5.48xlarge (8 × NVIDIA A10G 22.3 GiB) "
        "on-demand in us-east-1 at $16.29/h"
    )


def test_no_spot_preference_asks_for_on_demand_and_spot_yes_for_spot():
    assert placement.offer_request(parse("gpus=8")) == OfferRequest(gpus=8, spot=False)
    asked = placement.offer_request(parse("gpus=8 spot gpu_mem=40 region=us-west-2,eu-west-1"))
    assert asked == OfferRequest(8, 40.0, True, ("us-west-2", "eu-west-1"))


def test_gpus_auto_asks_for_the_memory_the_model_needs_not_its_size_class():
    class Estimate:
        def per_gpu(self, gpus, strategy):
            return int(20.05 * (1 << 30)) if (gpus, strategy) == (2, "fsdp") else 0

    # 20.05 GiB + 1 GiB for CUDA's own: 21.1, so a 22.3 GiB A10G still qualifies
    assert choose.gpu_mem_floor(Estimate(), 2, "fsdp") == 21.1


# ---- which provider a cell gets --------------------------------------------------------------


@pytest.fixture
def providers(monkeypatch):
    """Providers by name; ``burst.providers`` lists them and ``burst.provider`` is unset."""
    installed: dict[str, object] = {}
    monkeypatch.setattr(registry, "get_provider", installed.__getitem__)
    monkeypatch.setattr(cluster, "get_provider", installed.__getitem__)
    monkeypatch.setattr(placement, "_held", None)

    def install(**named):
        installed.update(named)
        return dask.config.set({"burst.providers": list(named), "burst.provider": None})

    return install


class Fake:
    def __init__(self, name, offers, alive=False):
        self.name, self._offers, self.alive, self.asked = name, offers, alive, 0

    def offers(self, request):
        self.asked += 1
        return list(self._offers)

    def is_alive(self, record):
        return self.alive


def test_the_provider_comes_from_the_cell_the_config_or_the_choice(providers):
    with providers(local=Fake("local", [])):
        assert parse("gpus=2").provider == "local"  # one enabled provider: as before
    with providers(local=Fake("local", []), aws=Fake("aws", [])):
        assert parse("gpus=2").provider is None  # several: chosen when the cell runs
        assert parse("gpus=2 provider=aws").provider == "aws"
        with dask.config.set({"burst.provider": "aws"}):
            assert parse("gpus=2").provider == "aws"


def test_a_choice_is_made_once_for_the_cell_and_a_running_cluster_is_never_rechosen(
    providers, tmp_path
):
    aws = Fake("aws", [offer()])
    example = Fake("example", [offer("example", "example.2gpu", gpus=2, price=0.5)])
    with (
        providers(local=Fake("local", [CPU_SLOTS]), aws=aws, example=example),
        dask.config.set({"burst.state-dir": str(tmp_path)}),
    ):
        options = parse("gpus=4")
        chosen = placement.resolve(options)
        assert (chosen.provider, chosen.plan.offer.instance_type) == ("example", "example.2gpu")
        assert placement.resolve(options) == chosen and aws.asked == 1  # the launch asks again
        # a cluster of this name that runs on aws is used as it is, whatever is cheaper
        records.write_record(
            tmp_path, "default", {"id": "c1", "name": "default", "provider": "aws"}
        )
        aws.alive = True
        reused = placement.resolve(options)
        assert (reused.provider, reused.plan) == ("aws", None) and aws.asked == 1


def test_spot_gpu_mem_region_for_a_provider_that_cannot_honour_them_are_refused(providers):
    with providers(local=Fake("local", [])):
        with pytest.raises(OptionError) as info:
            placement.resolve(parse("provider=local spot=yes gpu_mem=40"))
    assert one_line(info.value) == (
        "burst: provider=local does not choose among offers, so spot=, gpu_mem= would be "
        "ignored; drop it, or name a provider that does (e.g. provider=aws)"
    )


# ---- the AWS provider launches what was chosen, on the cell's terms ----------------------------


def test_aws_plans_the_chosen_plan_as_is_and_honours_spot_gpu_mem_and_regions(
    monkeypatch, tmp_path
):
    catalog = [
        offer(price=5.0),
        offer(price=2.0, spot=True),
        offer("aws", "g6e.12xlarge", price=10.0, gpu_mem_gib=44.7, region="us-west-2"),
    ]
    aws = AwsProvider()
    asked: list[OfferRequest] = []
    monkeypatch.setattr(aws, "offers", lambda request: asked.append(request) or catalog)

    def plan(**kw):
        aws._quotes.forget()
        return aws.plan(ClusterRequest("c", 4, 20.0, tmp_path, **kw))

    chosen = Plan(offer(instance_type="g5.48xlarge", gpus=8, price=16.0), 1)
    assert plan(plan=chosen) is chosen and asked == []  # no second look at the prices
    assert plan().offer.spot is False  # no preference: an on-demand head
    assert plan(spot=True).price_per_hour == 2.0  # spot=yes: the user's call
    assert plan(gpu_mem_gib=40).offer.instance_type == "g6e.12xlarge"
    plan(regions=("us-west-2",))
    assert asked[-1].regions == ("us-west-2",)
    assert aws.price_per_hour(ClusterRequest("c", 8, 20.0, tmp_path, plan=chosen)) == 16.0


# ---- a third-party provider, installed as a package, in a real kernel ------------------------


@pytest.fixture
def example_installed(tmp_path) -> Path:
    """tests/example_provider installed (no network, no build isolation) into a folder of its own."""
    source, target = tmp_path / "example-src", tmp_path / "site"
    shutil.copytree(EXAMPLE, source)  # the build writes beside its sources: not in the repo
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
         "--no-build-isolation", "--target", str(target), str(source)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    assert (target / "burst_example_provider").is_dir()
    return target


def test_a_plain_cell_runs_on_the_cheapest_provider_a_third_party_package_adds(
    example_installed, state_dir, workdir
):
    env = {
        "PYTHONPATH": os.pathsep.join([str(example_installed), str(REPO)]),
        "DASK_BURST__PROVIDERS": "[local, example]",
        "DASK_BURST__LOCAL__SLOTS": "2",
    }
    with burst_kernel(state_dir, workdir, env) as kernel:
        offers = kernel.ok("%burst offers gpus=2").text
        rows = {line.split()[0]: line for line in offers.splitlines()[2:] if line[:1].isalpha()}
        assert rows["example"].split()[1:3] == ["example.2gpu", "2"], offers
        assert rows["example"].split()[-1] == "0.50" and "local" in rows, offers

        # Nothing fits: one line naming the closest offer and the fix; nothing is started.
        bad = kernel.execute("%%burst gpus=2 gpu_mem=80\nx = 1\n")
        assert bad.evalue == (
            "burst: nothing offers 2 GPUs with >= 80 GiB each, on-demand; closest: example.2gpu "
            "(2 × Example GPU 24 GiB) on-demand in example-1 at $0.50/h; to get it, ask "
            "gpu_mem=24 or less (the most on offer)"
        ), bad.error_text
        assert cluster_record(state_dir) is None

        kernel.ok("x = 40")
        run = kernel.ok("%%burst gpus=2\nimport os\ny = x + burst.world_size\n", timeout=120)
        lines = run.stdout.splitlines()
        assert lines[:2] == [
            "burst: cheapest offer for 2 GPUs: example example.2gpu (2 × Example GPU 24 GiB) "
            "on-demand in example-1 at $0.50/h",
            "burst: example provider starting example.2gpu (2 × Example GPU 24 GiB) on-demand "
            "in example-1 at $0.50/h",
        ], run.stdout
        assert kernel.ok("print(y)").stdout.strip() == "42"
        assert cluster_record(state_dir)["provider"] == "example"
        assert "example" in kernel.ok("%burst status").text

        # The next cell uses the running cluster: nothing is chosen or announced again.
        again = kernel.ok("%%burst gpus=2\nz = y + 1\n", timeout=60)
        assert "cheapest offer" not in again.stdout and "starting" not in again.stdout
        assert kernel.ok("print(z)").stdout.strip() == "43"
