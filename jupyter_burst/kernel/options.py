"""The ``%%burst`` option grammar: strict ``key=value`` words, one clear line per mistake.

Nothing here is evaluated as Python: values are parsed by type, never ``eval``-ed.
"""

from __future__ import annotations

import difflib
import keyword
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from jupyter_burst import config
from jupyter_burst.clusters.gather import enabled_providers
from jupyter_burst.clusters.offers import Plan
from jupyter_burst.clusters.registry import known_providers
from jupyter_burst.errors import NotYetAvailable, OptionError
from jupyter_burst.kernel import offer_words
from jupyter_burst.store.budget import parse_usd

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,62}")
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)")
_MAX_MINUTES = 7 * 24 * 60


@dataclass(frozen=True)
class CellOptions:
    """What one ``%%burst`` line asked for, with the config defaults filled in."""

    gpus: int = 1
    provider: str | None = (
        "local"  # None: the cheapest offer of burst.providers (driver/placement.py)
    )
    cluster: str = "default"
    idle: float = 20.0
    timeout: float | None = None
    send: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    returns: tuple[str, ...] | None = None
    gather: bool = False
    gpus_auto: bool = False
    retries: int = 2
    background: bool = False
    name: str | None = None
    budget: Decimal | None = None  # USD: the job is stopped, after a checkpoint, before passing it
    max_hourly: Decimal | None = None  # USD/h a launch may cost, above burst.max-hourly
    spot: bool | None = None  # None: no preference, the provider's default
    gpu_mem: float | None = None  # GiB per GPU at least (gpus=auto: the memory estimate's)
    regions: tuple[str, ...] = ()
    profile: bool = False  # print where the cell's milliseconds went (kernel/cell_profile.py)
    plan: Plan | None = None  # the offer chosen for a cell that named no provider (never parsed)
    given: frozenset[str] = field(default_factory=frozenset)


def _int_at_least(low: int) -> Callable[[str, str], int]:
    def parse(key: str, text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise OptionError(
                f"{key}={text} is not a whole number; write e.g. {key}={low}"
            ) from None
        if value < low:
            raise OptionError(f"{key}={value} is out of range: it must be a whole number >= {low}")
        return value

    return parse


def parse_minutes(key: str, text: str) -> float:
    """``20`` (minutes), ``90s``, ``1.5m`` or ``2h`` as minutes."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match:
        raise OptionError(
            f"{key}={text} is not a duration; write minutes ({key}=20) or a unit ({key}=90s, {key}=2h)"
        )
    number, unit = float(match.group(1)), match.group(2)
    minutes = {"s": number / 60, "h": number * 60}.get(unit, number)
    if not 0 < minutes <= _MAX_MINUTES:
        raise OptionError(f"{key}={text} is out of range: more than 0 and at most 7 days")
    return minutes


def _name(key: str, text: str) -> str:
    if not _NAME.fullmatch(text):
        raise OptionError(
            f"{key}={text} is not a valid name; use letters, digits, '-', '_' or '.', "
            "starting with a letter"
        )
    return text


def _identifiers(key: str, text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise OptionError(f"{key}= is empty; name the variables, e.g. {key}=model,data")
    for name in names:
        if not name.isidentifier() or keyword.iskeyword(name):
            raise OptionError(f"{key}={text}: '{name}' is not a variable name")
    if len(set(names)) != len(names):
        raise OptionError(f"{key}={text} names a variable twice")
    return names


def _yes_no(key: str, text: str) -> bool:
    value = text.strip().lower()
    if value in ("yes", "true", "1", "on"):
        return True
    if value in ("no", "false", "0", "off"):
        return False
    raise OptionError(f"{key}={text} is not yes or no; write {key} alone, or {key}=no")


def _provider(key: str, text: str) -> str:
    name = _name(key, text)
    known = known_providers()
    if name in known:
        return name
    if name in _LATER_PROVIDERS:
        raise NotYetAvailable(
            f"provider={name} arrives with issue #{_LATER_PROVIDERS[name]}; "
            f"available now: {', '.join(sorted(known))}"
        )
    raise OptionError(
        f"unknown provider '{name}'{_did_you_mean(name, known)}; known: {', '.join(sorted(known))}"
    )


def _returns(key: str, text: str) -> tuple[str, ...] | str:
    if text == "gather":
        return "gather"
    return _identifiers(key, text)


def _budget(key: str, text: str) -> Decimal:
    try:
        return parse_usd(text)
    except ValueError:
        raise OptionError(
            f"{key}={text} is not an amount in USD more than 0; write e.g. {key}=20 or {key}=12.50"
        ) from None


def _offer_word(key: str, text: str) -> Any:
    """spot=, gpu_mem=, region=: the grammar (and the error lines) of ``%burst offers``."""
    parse = {
        "spot": offer_words.parse_spot,
        "gpu_mem": offer_words.parse_gpu_mem,
        "region": offer_words.parse_regions,
    }
    return parse[key](text)


_MAX_GPUS = 1024


def _gpus(key: str, text: str) -> int | str:
    if text == "auto":
        return "auto"
    value = _int_at_least(1)(key, text)
    if value > _MAX_GPUS:
        raise OptionError(f"{key}={value} is out of range: at most {_MAX_GPUS}")
    return value


# Each retry runs the whole cell again (on a new machine when one was lost): a few are what
# a lost node needs; more is a loop that bills while it fails.
_MAX_RETRIES = 10


def _retries(key: str, text: str) -> int:
    value = _int_at_least(0)(key, text)
    if value > _MAX_RETRIES:
        raise OptionError(
            f"{key}={value} is out of range: at most {_MAX_RETRIES} (each retry runs the cell "
            "again, on a new machine when one was lost)"
        )
    return value


_PARSERS: dict[str, tuple[Callable[[str, str], Any], str]] = {
    "gpus": (_gpus, "gpus"),
    "provider": (_provider, "provider"),
    "cluster": (_name, "cluster"),
    "idle": (parse_minutes, "idle"),
    "timeout": (parse_minutes, "timeout"),
    "send": (_identifiers, "send"),
    "exclude": (_identifiers, "exclude"),
    "return": (_returns, "returns"),
    "retries": (_retries, "retries"),
    "async": (_yes_no, "background"),
    "name": (_name, "name"),
    "budget": (_budget, "budget"),
    "max_hourly": (_budget, "max_hourly"),
    "spot": (_offer_word, "spot"),
    "gpu_mem": (_offer_word, "gpu_mem"),
    "region": (_offer_word, "regions"),
    "profile": (_yes_no, "profile"),
}

# Options that may stand alone as a bare word, meaning yes: `%%burst async name=train1`.
_FLAGS = frozenset({"async", "spot", "profile"})


def option_keys() -> list[str]:
    """The ``%%burst`` options, in the order the README's table lists them."""
    return list(_PARSERS)


def flag_keys() -> frozenset[str]:
    """The options that may also be written bare (``async``, ``spot``, ``profile``)."""
    return _FLAGS


# Options and providers that later issues implement: named here so they are refused
# with a pointer instead of being mistaken for typos or silently ignored.
_LATER_OPTIONS: dict[str, int] = {}
_LATER_PROVIDERS: dict[str, int] = {}


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def parse(line: str) -> CellOptions:
    """Parse the text after ``%%burst``; raise :class:`OptionError` with one line on a mistake."""
    try:
        # IPython hands a cell magic its line with the trailing whitespace removed, by Python's
        # reckoning (``\x1f`` is whitespace there, not to shlex): the same line, read the same.
        words = shlex.split(line.rstrip(), comments=False, posix=True)
    except ValueError as exc:
        raise OptionError(f"cannot read the options ({exc}); check the quotes") from None
    values: dict[str, Any] = {}
    given: set[str] = set()
    for word in words:
        key, sep, text = word.partition("=")
        key = key.strip()
        if key in _FLAGS and not sep:
            sep, text = "=", "yes"
        if key in _LATER_OPTIONS:
            raise NotYetAvailable(f"option '{key}' arrives with issue #{_LATER_OPTIONS[key]}")
        if key not in _PARSERS:
            choices = list(_PARSERS) + list(_LATER_OPTIONS)
            if not sep:
                raise OptionError(
                    f"'{word}' is not an option{_did_you_mean(key, choices)}; "
                    "options are key=value, e.g. gpus=1"
                )
            raise OptionError(
                f"unknown option '{key}'{_did_you_mean(key, choices)}; known: {', '.join(_PARSERS)}"
            )
        if not sep:
            raise OptionError(f"option '{key}' needs a value: write {key}=...")
        if key in given:
            raise OptionError(f"option '{key}' is given twice; keep one")
        if text == "":
            raise OptionError(f"option '{key}' has an empty value: write {key}=...")
        given.add(key)
        parser, attr = _PARSERS[key]
        values[attr] = parser(key, text)

    if "name" in values and not values.get("background"):
        raise OptionError(
            f"name={values['name']} names a background job; add async: %%burst async name={values['name']}"
        )
    if values.get("profile") and values.get("background"):
        raise OptionError(
            "profile times a cell the notebook waits for, not an async one; drop one of the two"
        )
    overlap = set(values.get("send", ())) & set(values.get("exclude", ()))
    if overlap:
        raise OptionError(f"'{sorted(overlap)[0]}' is both in send= and exclude=; keep one")
    return _with_defaults(values, frozenset(given))


def _with_defaults(values: dict[str, Any], given: frozenset[str]) -> CellOptions:
    defaults: dict[str, Any] = {
        "provider": _default_provider(),
        "idle": float(config.get("idle", 20)),
        "timeout": config.get("timeout"),
    }
    # Settings the line did not override are checked as the line's options are: a cluster
    # name reaches paths and boot scripts, and retries bills.
    if "cluster" not in values:
        defaults["cluster"] = _name("burst.cluster", str(config.get("cluster", "default")))
    if "retries" not in values:
        defaults["retries"] = _retries("burst.retries", str(config.get("retries", 2)))
    if defaults["timeout"] is not None:
        defaults["timeout"] = parse_minutes("burst.timeout", str(defaults["timeout"]))
    defaults["idle"] = parse_minutes("burst.idle", str(defaults["idle"]))
    if values.get("gpus") == "auto":
        values["gpus"] = 1
        values["gpus_auto"] = True
    if values.get("returns") == "gather":
        values["returns"] = None
        values["gather"] = True
    defaults.update(values)
    return CellOptions(given=given, **defaults)


def _default_provider() -> str | None:
    """``burst.provider``; unset, the one enabled provider, or None: choose the cheapest offer."""
    named = config.get("provider", None)
    if named:
        return str(named)
    enabled = enabled_providers()
    if len(enabled) > 1:
        return None  # driver/placement.py picks among them when the cell runs
    return enabled[0] if enabled else "local"
