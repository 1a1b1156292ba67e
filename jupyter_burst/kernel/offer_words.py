"""The words of ``%burst offers`` (``gpus=``, ``gpu_mem=``, ``spot=``, ``region=``), parsed into
an :class:`~jupyter_burst.clusters.offers.OfferRequest`; one line per mistake.

A ``%%burst`` line takes the same ``spot=``, ``gpu_mem=`` and ``region=`` words
(:mod:`jupyter_burst.kernel.options`): one grammar, the same one-line errors.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Sequence

from jupyter_burst.clusters.offers import OfferRequest
from jupyter_burst.errors import OptionError

OFFERS_KEYS = ("gpus", "gpu_mem", "spot", "region")
OFFERS_USAGE = "%burst offers gpus=8 [gpu_mem=40] [spot=yes|no] [region=us-east-1,...]"
_REGION = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def parse_offers_words(words: Sequence[str]) -> OfferRequest:
    """The request ``%burst offers`` words make; one-line :class:`OptionError` on a mistake."""
    given: dict[str, str] = {}
    for word in words:
        key, sep, text = word.partition("=")
        if key == "spot" and not sep:
            sep, text = "=", "yes"
        if key not in OFFERS_KEYS:
            hint = difflib.get_close_matches(key, OFFERS_KEYS, n=1, cutoff=0.6)
            maybe = f" (did you mean '{hint[0]}'?)" if hint else ""
            what = f"unknown option '{key}'" if sep else f"'{word}' is not an option"
            raise OptionError(f"{what}{maybe}; write {OFFERS_USAGE}")
        if key in given:
            raise OptionError(f"option '{key}' is given twice; keep one")
        if not sep or text == "":
            raise OptionError(f"option '{key}' needs a value: write {key}=...")
        given[key] = text
    if "gpus" not in given:
        raise OptionError(f"say how many GPUs: {OFFERS_USAGE}")
    return OfferRequest(
        gpus=parse_gpus(given["gpus"]),
        gpu_mem_gib=parse_gpu_mem(given["gpu_mem"]) if "gpu_mem" in given else None,
        spot=parse_spot(given["spot"]) if "spot" in given else None,
        regions=parse_regions(given["region"]) if "region" in given else (),
    )


def parse_gpus(text: str) -> int:
    """``gpus=`` of ``%burst offers``: a whole number (``auto`` needs a model, so not here)."""
    if text == "auto":
        raise OptionError("gpus=auto needs a model; %burst offers takes a number, e.g. gpus=8")
    try:
        value = int(text)
    except ValueError:
        raise OptionError(f"gpus={text} is not a whole number; write e.g. gpus=8") from None
    if not 1 <= value <= 1024:
        raise OptionError(f"gpus={value} is out of range: from 1 to 1024")
    return value


def parse_gpu_mem(text: str) -> float:
    """``gpu_mem=``: GiB per GPU, more than 0."""
    try:
        value = float(text)
    except ValueError:
        raise OptionError(
            f"gpu_mem={text} is not a number of GiB per GPU; write e.g. gpu_mem=40"
        ) from None
    if not 0 < value <= 4096 or math.isnan(value):
        raise OptionError(f"gpu_mem={text} is out of range: GiB per GPU, more than 0")
    return value


def parse_spot(text: str) -> bool | None:
    """``spot=``: yes, no or any (None)."""
    value = text.strip().lower()
    if value in ("yes", "true", "1", "on"):
        return True
    if value in ("no", "false", "0", "off"):
        return False
    if value in ("any", "both"):
        return None
    raise OptionError(f"spot={text} is not yes, no or any; write spot=yes or spot=no")


def parse_regions(text: str) -> tuple[str, ...]:
    """``region=a,b``: region names, each once."""
    regions = tuple(part.strip() for part in text.split(","))
    for region in regions:
        if not _REGION.fullmatch(region):
            raise OptionError(
                f"region={text}: '{region}' is not a region name; write e.g. region=us-east-1,eu-west-1"
            )
    if len(set(regions)) != len(regions):
        raise OptionError(f"region={text} names a region twice")
    return regions
