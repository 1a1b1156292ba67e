"""Before machines start: what a launch would cost an hour, the hourly cap's and the daily
budget's word on it.

The driver asks before it starts a cluster (:mod:`jupyter_burst.driver.cluster`), a provider
before it adds nodes to a running one (``grow``): a refused launch starts nothing. The
arithmetic is :mod:`jupyter_burst.store.cost`'s, the refusal :mod:`jupyter_burst.store.budget`'s.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from jupyter_burst import config
from jupyter_burst.errors import BudgetExceeded, OptionError
from jupyter_burst.store.budget import daily_budget, daily_refusal, usd
from jupyter_burst.store.cost import ZERO, day_start, spent_today
from jupyter_burst.store.ledger import shared_ledger


def launch_price(provider: Any, request: Any) -> Decimal:
    """$/hour of the nodes a launch would start.

    A provider quotes it with ``price_per_hour(request)``; the local provider's is the
    notional ``burst.local.price-per-hour`` (0 unless configured); otherwise 0.
    """
    quote = getattr(provider, "price_per_hour", None)
    if callable(quote):
        return Decimal(repr(float(quote(request) or 0.0)))
    if getattr(provider, "name", None) == "local":
        return local_price_per_hour()
    return ZERO


def local_price_per_hour() -> Decimal:
    """``burst.local.price-per-hour``: the notional price of a local cluster (default 0)."""
    value = config.get("local.price-per-hour", 0) or 0
    try:
        price = Decimal(repr(float(value)))
    except (TypeError, ValueError):
        price = Decimal(-1)
    if price < 0 or not price.is_finite():
        raise OptionError(
            f"burst.local.price-per-hour={value} is not a price; set dollars per hour >= 0 "
            "(e.g. DASK_BURST__LOCAL__PRICE_PER_HOUR=2.5)"
        )
    return price


DEFAULT_MAX_HOURLY = Decimal(20)
# Providers whose prices are notional (this machine, on-prem hosts): no launch there bills.
NOTIONAL_PROVIDERS = frozenset({"local", "ssh"})


def max_hourly() -> Decimal:
    """``burst.max-hourly``: the most dollars an hour a launch may cost unless its cell agrees
    to more with ``max_hourly=`` (default 20: one big GPU machine, not a fleet)."""
    value = config.get("max-hourly", DEFAULT_MAX_HOURLY)
    try:
        cap = Decimal(repr(float(value)))
    except (TypeError, ValueError):
        cap = Decimal(-1)
    if cap <= 0 or not cap.is_finite():
        raise OptionError(
            f"burst.max-hourly={value} is not an amount in USD; set dollars an hour more than 0"
        )
    return cap


def check_hourly_cap(provider: Any, request: Any, price: float | None = None) -> None:
    """Refuse (one line) a launch that costs more an hour than ``burst.max-hourly``, unless
    the cell said it may with ``max_hourly=`` at least its price: a typo in ``gpus=`` or an
    instance type must not start a fleet. ``price``: of nodes added to a running cluster."""
    if getattr(provider, "name", None) in NOTIONAL_PROVIDERS:
        return  # machines already paid for: their price is a chargeback, not a bill
    price_now = launch_price(provider, request) if price is None else Decimal(repr(float(price)))
    agreed = getattr(request, "max_hourly", None)
    cap = Decimal(repr(float(agreed))) if agreed is not None else max_hourly()
    if price_now <= cap:
        return
    whose = "max_hourly= on its line" if agreed is not None else "burst.max-hourly"
    raise BudgetExceeded(
        f"burst: this launch would cost {usd(price_now)}/h, more than {usd(cap)}/h "
        f"({whose}); nothing was started. To go ahead, say so on the line: "
        f"max_hourly={int(price_now) + 1}"
    )


def check_daily_budget(
    state_dir: Any,
    provider: Any,
    request: Any,
    now: float | None = None,
    price: float | None = None,
) -> None:
    """Refuse a launch that would take today's spend past ``burst.budget.daily`` (one line).

    Called just before a provider launches (or adds nodes to a running cluster: ``price`` is
    then what the added nodes cost an hour): a refused launch starts nothing.
    """
    daily = daily_budget()
    if daily is None:
        return
    price = launch_price(provider, request) if price is None else Decimal(repr(float(price)))
    if price <= 0:
        return  # a free launch cannot pass any budget
    now = time.time() if now is None else now
    spent = spent_today(shared_ledger(state_dir).nodes(alive_since=day_start(now)), now)
    refusal = daily_refusal(spent.total, price, daily)
    if refusal is not None:
        raise BudgetExceeded(refusal)
