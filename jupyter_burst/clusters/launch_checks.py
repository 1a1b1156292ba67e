"""Before machines start: what a launch would cost an hour, and the daily budget's word on it.

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
from jupyter_burst.store.budget import daily_budget, daily_refusal
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
