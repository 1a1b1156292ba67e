"""The option grammar: every mistake is one clear line, nothing is evaluated, later options say so."""

from __future__ import annotations

import pytest

from jupyter_burst.errors import OptionError
from jupyter_burst.kernel.options import parse


def test_defaults_come_from_config(monkeypatch):
    monkeypatch.setenv("DASK_BURST__IDLE", "7")
    from jupyter_burst import config

    config.refresh()
    opts = parse("")
    assert (opts.gpus, opts.provider, opts.cluster, opts.idle, opts.timeout) == (
        1,
        "local",
        "default",
        7.0,
        None,
    )
    monkeypatch.delenv("DASK_BURST__IDLE")
    config.refresh()


def test_ranks_and_gather():
    opts = parse("gpus=4 return=gather")
    assert opts.gpus == 4 and opts.gather and opts.returns is None
    assert parse("gpus=auto").gpus_auto
    with pytest.raises(OptionError, match="at most 1024"):
        parse("gpus=5000")


def test_all_options_parse():
    opts = parse(
        "gpus=1 provider=local cluster=exp-1 idle=90s timeout=2h send=a,b exclude=c return=x,y"
    )
    assert opts.gpus == 1 and opts.cluster == "exp-1"
    assert opts.idle == 1.5 and opts.timeout == 120
    assert opts.send == ("a", "b") and opts.exclude == ("c",) and opts.returns == ("x", "y")
    assert opts.given == {
        "gpus",
        "provider",
        "cluster",
        "idle",
        "timeout",
        "send",
        "exclude",
        "return",
    }


@pytest.mark.parametrize(
    "line, message",
    [
        ("gpu=1", "burst: unknown option 'gpu' (did you mean 'gpus'?)"),
        ("gpus=0", "burst: gpus=0 is out of range"),
        ("gpus=-3", "burst: gpus=-3 is out of range"),
        ("gpus=two", "burst: gpus=two is not a whole number"),
        ("gpus=1 gpus=1", "burst: option 'gpus' is given twice"),
        ("idle=0", "burst: idle=0 is out of range"),
        ("idle=soon", "burst: idle=soon is not a duration"),
        ("timeout=9999d", "burst: timeout=9999d is not a duration"),
        ("idle=", "burst: option 'idle' has an empty value"),
        ("gpus", "burst: option 'gpus' needs a value"),
        ("fast", "burst: 'fast' is not an option"),
        ("cluster=../x", "burst: cluster=../x is not a valid name"),
        ("send=a,1b", "burst: send=a,1b: '1b' is not a variable name"),
        ("send=a exclude=a", "burst: 'a' is both in send= and exclude="),
        ("provider=locl", "burst: unknown provider 'locl' (did you mean 'local'?)"),
        ("cluster='unclosed", "burst: cannot read the options"),
        (
            "gpus=__import__('os').system('x')",
            "burst: gpus=__import__(os).system(x) is not a whole number",
        ),
    ],
)
def test_mistakes_are_one_clear_line(line, message):
    with pytest.raises(OptionError) as info:
        parse(line)
    text = str(info.value)
    assert text.startswith(message), text
    assert "\n" not in text


def test_async_is_a_bare_word_or_yes_no_and_name_needs_it():
    assert parse("async name=train1 gpus=2").background is True
    assert parse("async=no").background is False
    assert parse("async").name is None
    parsed = parse("retries=0 async name=run-1")
    assert (parsed.retries, parsed.name) == (0, "run-1")
    for line, message in [
        ("name=train1", "burst: name=train1 names a background job; add async"),
        ("async=maybe", "burst: async=maybe is not yes or no"),
        ("async name=1x", "burst: name=1x is not a valid name"),
        ("retries=-1", "burst: retries=-1 is out of range"),
        ("async async", "burst: option 'async' is given twice"),
    ]:
        with pytest.raises(OptionError) as info:
            parse(line)
        assert str(info.value).startswith(message), str(info.value)


def test_spot_gpu_mem_and_region_parse_as_in_burst_offers():
    parsed = parse("gpus=8 spot gpu_mem=40 region=us-east-1,eu-west-1")
    assert (parsed.spot, parsed.gpu_mem, parsed.regions) == (True, 40.0, ("us-east-1", "eu-west-1"))
    assert {"spot", "gpu_mem", "region"} <= parsed.given
    assert parse("spot=no").spot is False and parse("spot=any").spot is None
    plain = parse("gpus=8")
    assert (plain.spot, plain.gpu_mem, plain.regions) == (None, None, ())  # the provider's default


@pytest.mark.parametrize(
    "line, message",
    [
        ("spot=maybe", "burst: spot=maybe is not yes, no or any; write spot=yes or spot=no"),
        (
            "gpu_mem=lots",
            "burst: gpu_mem=lots is not a number of GiB per GPU; write e.g. gpu_mem=40",
        ),
        ("gpu_mem=0", "burst: gpu_mem=0 is out of range: GiB per GPU, more than 0"),
        ("region=US_East", "burst: region=US_East: 'US_East' is not a region name"),
        ("region=a,a", "burst: region=a,a names a region twice"),
        ("gpu_mem=40 gpu_mem=80", "burst: option 'gpu_mem' is given twice; keep one"),
        ("regions=us-east-1", "burst: unknown option 'regions' (did you mean 'region'?)"),
    ],
)
def test_spot_gpu_mem_and_region_mistakes_are_one_line(line, message):
    with pytest.raises(OptionError) as info:
        parse(line)
    text = str(info.value)
    assert text.startswith(message) and "\n" not in text, text
