"""Budget policies, pure: when a job is asked to save its work and stopped, when a launch is refused.

They decide on numbers handed in (the spend so far, $/hour, a clock), so they are tested on a
fake clock; :mod:`jupyter_burst.driver.jobs` and :mod:`jupyter_burst.clusters.launch_checks`
read the ledger and act. :func:`daily_budget` reads the one configured amount they decide on.
Money is :class:`~decimal.Decimal` dollars (see :mod:`jupyter_burst.store.cost`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from jupyter_burst import config
from jupyter_burst.errors import OptionError

HOUR = Decimal(3600)
_AMOUNT = re.compile(r"\$?(\d+(?:\.\d*)?|\.\d+)")

GO = "go"  # nothing to do
ASK = "ask"  # ask the cell to save its work now (as a spot notice does)
WAIT = "wait"  # asked; the cell has its grace to save and end
STOP = "stop"  # stop the job now


def parse_usd(text: Any) -> Decimal:
    """``20``, ``12.50`` or ``$20`` as dollars, more than 0; ValueError otherwise."""
    match = _AMOUNT.fullmatch(str(text).strip())
    if not match:
        raise ValueError(f"not an amount: {text!r}")
    amount = Decimal(match.group(1))
    if amount <= 0:
        raise ValueError(f"not more than 0: {text!r}")
    return amount


def daily_budget() -> Decimal | None:
    """``burst.budget.daily`` in dollars, or None (no daily budget)."""
    value = config.get("budget.daily")
    if value is None or value == "":
        return None
    try:
        return parse_usd(value)
    except ValueError:
        raise OptionError(
            f"burst.budget.daily={value} is not an amount in USD; set a positive amount "
            "(e.g. DASK_BURST__BUDGET__DAILY=50) or null for none"
        ) from None


def usd(amount: Decimal) -> str:
    """Dollars to the cent, for display only (the amounts themselves stay exact)."""
    return f"${amount.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):,.2f}"


def within(seconds: float) -> str:
    """A short horizon in words: ``9 s``, ``4 min``, ``2.5 h``."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


@dataclass
class JobBudget:
    """``budget=USD`` on a cell: the job is stopped, after a checkpoint, before it costs more.

    Checked every ``interval`` seconds with the job's cost so far and the $/hour of the
    machines it runs on. Acting takes time that costs too: the wait for the next check, the
    ``grace`` the cell gets to save its work, and ``stopping`` it (an interrupt, and replacing a
    worker stuck in C code). So the cell is asked to checkpoint (ASK) as soon as the cost
    projected over all of that would reach the budget, and stopped (STOP) when its grace is
    over, or sooner if the rate went up and waiting longer would pass the budget.
    """

    budget: Decimal
    grace: float = 30.0
    interval: float = 1.0
    stopping: float = 6.0
    asked_at: float | None = None
    spent_when_asked: Decimal | None = None
    rate_when_asked: Decimal | None = None

    @property
    def horizon(self) -> float:
        """Seconds from a check to the job's last billed second, at the latest."""
        return self.interval + self.grace + self.stopping

    def projected(self, spent: Decimal, per_hour: Decimal, seconds: float) -> Decimal:
        return spent + per_hour * Decimal(repr(float(seconds))) / HOUR

    def decide(self, spent: Decimal, per_hour: Decimal, now: float) -> str:
        """GO, ASK (once), WAIT or STOP, for the job's cost ``spent`` so far at ``now``."""
        if self.asked_at is None:
            if self.projected(spent, per_hour, self.horizon) < self.budget:
                return GO
            self.asked_at, self.spent_when_asked, self.rate_when_asked = now, spent, per_hour
            return ASK
        if now >= self.asked_at + self.grace:
            return STOP
        if self.projected(spent, per_hour, self.interval + self.stopping) >= self.budget:
            return STOP
        return WAIT

    def seconds_left(self, spent: Decimal, per_hour: Decimal) -> float | None:
        """Seconds until the cost reaches the budget at ``per_hour``; None at no cost."""
        if per_hour <= 0:
            return None
        return max(0.0, float((self.budget - spent) / per_hour * HOUR))

    def notice(self, spent: Decimal, per_hour: Decimal) -> str:
        """The line the cell shows when asked to save its work."""
        left = self.seconds_left(spent, per_hour)
        when = f"within {within(left)}" if left is not None else "soon"
        return (
            f"burst: this job's budget={usd(self.budget)} will be reached {when} "
            f"({usd(spent)} so far): save your work now (burst.preempting, burst.on_preempt); "
            f"the job is stopped in {within(self.grace)}"
        )

    def stopped(
        self, spent: Decimal, job: str, checkpoint_step: Any = None, saved: bool = False
    ) -> str:
        """The one line the cell raises once the job was stopped for its budget."""
        left = None
        if self.spent_when_asked is not None and self.rate_when_asked is not None:
            left = self.seconds_left(self.spent_when_asked, self.rate_when_asked)
        projected = f" (projected to pass it within {within(left)})" if left is not None else ""
        if saved:
            step = f" (step {checkpoint_step})" if checkpoint_step is not None else ""
            where = f"its latest checkpoint{step}: %burst checkpoints {job}"
        else:
            where = (
                "it saved no checkpoint; burst.on_preempt(lambda: burst.checkpoint(...)) "
                "saves one when the budget is near"
            )
        return (
            f"burst: the job was stopped at {usd(spent)} of its budget="
            f"{usd(self.budget)}{projected}; {where}"
        )


def daily_refusal(spent_today: Decimal, per_hour: Decimal, daily: Decimal | None) -> str | None:
    """The line that refuses a launch, when today's spend plus its first hour passes ``daily``.

    A launch that costs nothing is never refused: it cannot add to the spend.
    """
    if daily is None or per_hour <= 0:
        return None
    if spent_today + per_hour <= daily:
        return None
    return (
        f"burst: today's spend {usd(spent_today)} plus the first hour of this cluster "
        f"({usd(per_hour)}/h) would pass the daily budget of {usd(daily)} "
        "(burst.budget.daily); raise it or wait until tomorrow"
    )
