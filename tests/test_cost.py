"""Costs that are exact, and never a surprise bill: billing rules, totals, budgets, %burst cost.

The rules and policies run on a fake clock; the promises run in real kernels with the local
provider at a notional $3,600/hour, so that a second costs $1.
"""

from __future__ import annotations

import json
import math
import pathlib
import re
import sqlite3
import time
from decimal import Decimal

import dask.config
import pytest

from jupyter_burst.clusters.launch_checks import check_daily_budget
from jupyter_burst.errors import BudgetExceeded, OptionError
from jupyter_burst.kernel.options import parse
from jupyter_burst.store import budget, cost
from jupyter_burst.store.budget import ASK, GO, STOP, WAIT, JobBudget, daily_refusal
from jupyter_burst.store.ledger import Ledger
from tests.harness import burst_kernel, burst_processes, cluster_record

D = Decimal
PER_SECOND = {"DASK_BURST__LOCAL__PRICE_PER_HOUR": "3600", "DASK_BURST__LOCAL__SLOTS": "1"}


def node(started, stopped=None, price=3600.0, provider="aws", cluster="c1", **more) -> dict:
    return {
        "id": f"n{started}",
        "cluster_id": cluster,
        "provider": provider,
        "price_per_hour": price,
        "started": started,
        "stopped": stopped,
        "notional": None,
        "billing_minimum": None,
        **more,
    }


# billing rules -------------------------------------------------------------------------


def test_billing_is_per_second_rounded_up_with_a_60_second_minimum():
    assert cost.billed_seconds(100.0, 100.2) == 60  # the minimum
    assert cost.billed_seconds(0.0, 60.0) == 60
    assert cost.billed_seconds(0.0, 61.0) == 61
    assert cost.billed_seconds(0.0, 61.4) == 62  # a second begun is a second billed
    assert cost.billed_seconds(0.0, 61.000001) == 62
    assert cost.billed_seconds(0.0, 0.2, minimum=0) == 1
    assert cost.billed_seconds(5.0, 5.0, minimum=0) == 0
    assert cost.billed_seconds(50.0, 40.0) == 60  # a clock that went back bills the minimum
    # 110.1 - 100.1 is 10.000000000000014 in floats: still 10 seconds, not 11.
    assert cost.billed_seconds(100.1, 110.1, minimum=0) == 10


def test_a_node_costs_its_launch_price_times_billed_seconds_so_far_and_once_stopped():
    running = node(1000.0, price=3.06)
    assert cost.node_cost(running, now=1030.5) == D("3.06") * 60 / 3600  # the minimum so far
    assert cost.node_cost(running, now=1130.2) == D("3.06") * 131 / 3600
    stopped = node(1000.0, stopped=1200.5, price=3.06)
    assert cost.node_cost(stopped, now=99999.0) == D("3.06") * 201 / 3600
    assert cost.usd(cost.node_cost(stopped, now=0)) == "$0.17"


def test_local_nodes_are_notional_without_a_minimum_unless_the_provider_recorded_otherwise():
    local = node(0.0, 0.5, provider="local")
    assert cost.is_notional(local) and cost.minimum_seconds(local) == 0
    assert cost.node_cost(local, now=1) == D(1)  # $1/s, one second begun
    cloud = node(0.0, 0.5, provider="aws")
    assert not cost.is_notional(cloud) and cost.minimum_seconds(cloud) == 60
    assert cost.node_cost(cloud, now=1) == D(60)
    recorded = node(0.0, 0.5, provider="aws", notional=1, billing_minimum=10.0)
    assert cost.is_notional(recorded) and cost.node_cost(recorded, now=1) == D(10)
    assert cost.Spend.of(local, D(3)).show() == "$3.00 notional"
    assert (cost.Spend.of(local, D(3)) + cost.Spend.of(cloud, D("1.5"))).show(
        "/h"
    ) == "$1.50/h + $3.00/h notional"


def test_a_node_across_midnight_and_a_month_boundary_counts_its_minimum_once_where_it_started():
    month = cost.month_start(time.mktime((2026, 3, 1, 12, 0, 0, 0, 0, -1)))
    assert cost.day_start(month) == month
    # Up at 23:59:29.75 on the last day of February, down at 00:00:10.5 on 1 March: it ran
    # 40.75 s, billed 60 s ($60 at $1/s).
    crossing = node(month - 30.25, stopped=month + 10.5)
    assert cost.node_cost(crossing, now=month + 100) == D(60)
    before = cost.node_cost_between(crossing, month - 86400, month, now=month + 100)
    after = cost.node_cost_between(crossing, month, math.inf, now=month + 100)
    assert before == D("49.5")  # its 30.25 s of February, and the 19.25 s its minimum adds
    assert after == D("10.5")  # March: only its seconds there
    assert before + after == D(60)

    today = node(month + 3600, stopped=month + 3601)  # started in March: its minimum is March's
    totals = cost.totals([crossing, today], now=month + 7200, session_started=month - 1000)
    assert totals.today.total == totals.month.total == D("10.5") + D(60)
    assert totals.session.total == D(60) + D(60)
    assert totals.rate.total == 0 and totals.running.total == 0


def test_totals_show_the_running_rate_and_what_running_nodes_cost_so_far():
    now = cost.day_start(time.time()) + 7200.0  # 02:00 local time today
    nodes = [
        node(now - 100, price=3600.0),  # running: $1/s
        node(now - 50, price=7200.0, provider="local"),  # running, notional: $2/s
        node(now - 3000, stopped=now - 2000),  # stopped: 1000 s
    ]
    totals = cost.totals(nodes, now, session_started=now - 60)
    assert totals.rate == cost.Spend(billed=D(3600), notional=D(7200))
    assert totals.running == cost.Spend(billed=D(100), notional=D(100))
    assert totals.today == cost.Spend(billed=D(1100), notional=D(100))
    # The session began after the first node started: its minimum is not the session's.
    assert totals.session == cost.Spend(billed=D(60), notional=D(100))


def test_a_job_is_charged_the_node_time_it_overlapped_and_concurrent_jobs_add_up_to_more():
    nodes = [node(0.0, stopped=100.0, price=3600.0), node(30.0, stopped=100.0, price=7200.0)]
    first = {"started": 10.0, "ended": 40.0}
    second = {"started": 20.0, "ended": 50.0}
    assert cost.job_cost(first, nodes, now=200) == D(30) + D(20)  # 30 s at $1, 10 s at $2
    assert cost.job_cost(second, nodes, now=200) == D(30) + D(40)
    bill = sum(cost.node_cost(n, now=200) for n in nodes)
    assert bill == D(100) + D(140)
    running = {"started": 90.0, "ended": None}
    assert cost.job_cost(running, nodes, now=95.5) == D("5.5") + D(11)
    # A tenth of a cent per job still adds up: amounts are exact, rounded only when shown.
    cheap = [node(0.0, stopped=1000.0, price=3.6)]
    parts = [cost.job_cost({"started": i, "ended": i + 1.0}, cheap, now=1000) for i in range(999)]
    assert cost.usd(parts[0]) == "$0.00" and parts[0] == D("0.001")
    assert sum(parts) == D("0.999") and cost.usd(sum(parts)) == "$1.00"


# budget policies -------------------------------------------------------------------------


def test_a_job_budget_asks_for_a_checkpoint_then_stops_before_the_budget_on_a_fake_clock():
    policy = JobBudget(D(20), grace=5, interval=1, stopping=2)  # acting takes up to 8 s
    per_second = D(3600)
    assert policy.decide(D(11), per_second, now=100) == GO  # 11 + 8 < 20
    assert policy.decide(D(12), per_second, now=101) == ASK  # 12 + 8 reaches it
    assert policy.decide(D(13), per_second, now=102) == WAIT
    assert policy.decide(D(16), per_second, now=105.9) == WAIT
    assert policy.decide(D(17), per_second, now=106) == STOP  # the grace is over
    assert policy.notice(D(12), per_second).startswith(
        "burst: this job's budget=$20.00 will be reached within 8 s ($12.00 so far): save your work now"
    )
    assert policy.stopped(D("17.4"), "abc123", 7, saved=True) == (
        "burst: the job was stopped at $17.40 of its budget=$20.00 (projected to pass it within "
        "8 s); its latest checkpoint (step 7): %burst checkpoints abc123"
    )
    assert "it saved no checkpoint" in policy.stopped(D(17), "abc123")

    faster = JobBudget(D(20), grace=30, interval=1, stopping=2)
    assert faster.decide(D(0), per_second, now=0) == ASK  # 33 s of acting at $1/s
    assert faster.decide(D(16), per_second * 2, now=1) == STOP  # the rate doubled: 16 + 6

    free = JobBudget(D(1), grace=5)
    assert all(free.decide(D(0), D(0), now=t) == GO for t in range(100))


def test_the_daily_budget_refuses_a_launch_whose_first_hour_would_pass_it():
    assert daily_refusal(D(10), D(5), None) is None  # no daily budget
    assert daily_refusal(D(10), D(5), D(15)) is None  # exactly at it
    assert daily_refusal(D(500), D(0), D(15)) is None  # a free launch adds nothing
    assert daily_refusal(D("10.5"), D("4.6"), D(15)) == (
        "burst: today's spend $10.50 plus the first hour of this cluster ($4.60/h) would pass "
        "the daily budget of $15.00 (burst.budget.daily); raise it or wait until tomorrow"
    )


class _QuotingProvider:
    name = "quoting"

    def __init__(self, price: float):
        self.price = price

    def price_per_hour(self, request) -> float:
        return self.price


def test_the_daily_budget_counts_todays_spend_from_the_ledger(tmp_path: pathlib.Path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    now = cost.day_start(time.time()) + 7200.0
    with ledger._write() as db:  # a node that ran 100 s at $36/h today: $1 spent
        db.execute(
            "INSERT INTO nodes(id, cluster_id, provider, role, slots, price_per_hour, started, stopped)"
            " VALUES ('n', 'c', 'aws', 'head', 1, 36.0, ?, ?)",
            (now - 100, now),
        )
    assert cost.spent_today(ledger.nodes(), now).total == D(1)
    with dask.config.set({"burst.budget.daily": 10}):
        check_daily_budget(tmp_path, _QuotingProvider(9.0), None, now=now)  # $1 + $9
        with pytest.raises(BudgetExceeded) as info:
            check_daily_budget(tmp_path, _QuotingProvider(9.01), None, now=now)
        assert str(info.value).startswith(
            "burst: today's spend $1.00 plus the first hour of this cluster ($9.01/h) would pass "
            "the daily budget of $10.00"
        )
        check_daily_budget(tmp_path, _QuotingProvider(0.0), None, now=now)
    with dask.config.set({"burst.budget.daily": "lots"}):
        with pytest.raises(OptionError, match="burst.budget.daily=lots is not an amount in USD"):
            check_daily_budget(tmp_path, _QuotingProvider(1.0), None, now=now)
    check_daily_budget(tmp_path, _QuotingProvider(1e9), None, now=now)  # none set: never


def test_budget_is_a_positive_usd_amount():
    assert parse("budget=20").budget == D(20)
    assert parse("budget=$12.50").budget == D("12.50")
    for line in ("budget=0", "budget=-5", "budget=ten", "budget=1e3", "budget=$"):
        with pytest.raises(OptionError) as info:
            parse(line)
        assert str(info.value).startswith(f"burst: {line} is not an amount in USD more than 0")
    assert budget.parse_usd(".5") == D("0.5")


def test_an_older_ledger_file_gets_the_new_columns_and_keeps_its_rows(tmp_path: pathlib.Path):
    path = tmp_path / "ledger.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema_version', '1');"
        "CREATE TABLE nodes (id TEXT PRIMARY KEY, cluster_id TEXT NOT NULL, provider TEXT NOT NULL,"
        " role TEXT NOT NULL, slots INTEGER NOT NULL, devices TEXT,"
        " price_per_hour REAL NOT NULL DEFAULT 0, pid INTEGER, started REAL NOT NULL,"
        " stopped REAL, stop_reason TEXT);"
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, cluster_id TEXT, kernel TEXT, source TEXT NOT NULL,"
        " options TEXT NOT NULL, started REAL NOT NULL, ended REAL, status TEXT NOT NULL, error TEXT);"
        "INSERT INTO nodes(id, cluster_id, provider, role, slots, price_per_hour, started, stopped)"
        " VALUES ('old', 'c', 'aws', 'head', 1, 2.5, 10, 20);"
        "INSERT INTO jobs(id, cluster_id, source, options, started, status)"
        " VALUES ('j', 'c', 'pass', '{}', 10, 'running');"
    )
    db.close()
    ledger = Ledger(path)
    Ledger(path).close()  # a second opener finds it migrated already
    old = ledger.nodes()[0]
    assert old["price_per_hour"] == 2.5 and old["notional"] is None
    assert ledger.query("SELECT value FROM meta WHERE key = 'schema_version'")[0]["value"] == "3"
    ledger.node_started(
        "new", "c", "aws", "head", 1, [], None, 3.0, notional=True, billing_minimum=0
    )
    assert ledger.nodes(cluster_ids=["c"], alive_since=15)[1]["notional"] == 1
    ledger.job_ran_on("j", "c2")
    ledger.job_stop_reason("j", "budget")
    assert ledger.job_clusters(["j"]) == {"j": {"c", "c2"}}
    assert ledger.job("j")["stop_reason"] == "budget"
    # Later columns: a cancel from JupyterLab, the job's notebook, a cluster stopped on purpose.
    assert ledger.cancel_requested("j") is None and ledger.job("j")["notebook"] is None
    assert ledger.request_cancel("j") and ledger.cancel_requested("j") is not None
    assert not ledger.request_cancel("missing")
    ledger.cluster_started("c3", "n", "local", "tcp://127.0.0.1:1", 1, ["cpu"], 20)
    assert not ledger.stopped_on_purpose("c3")
    ledger.cluster_stop_requested("c3")
    assert ledger.stopped_on_purpose("c3")


# in real kernels ---------------------------------------------------------------------------


def test_a_launch_past_the_daily_budget_is_refused_with_one_line_and_nothing_starts(
    state_dir, workdir
):
    env = dict(PER_SECOND, DASK_BURST__BUDGET__DAILY="100")
    with burst_kernel(state_dir, workdir, env) as kernel:
        run = kernel.execute("%%burst\nx = 1\n")
        assert run.status == "error" and run.traceback == [run.evalue]
        assert run.evalue == (
            "burst: today's spend $0.00 plus the first hour of this cluster ($3,600.00/h) would "
            "pass the daily budget of $100.00 (burst.budget.daily); raise it or wait until tomorrow"
        )
        assert not burst_processes(state_dir) and cluster_record(state_dir) is None
        assert Ledger(state_dir / "ledger.sqlite").query("SELECT * FROM nodes") == []
        assert kernel.ok("print('x' in dir())").stdout.strip() == "False"


def test_burst_cost_shows_running_clusters_jobs_and_totals_exact_to_the_cent(state_dir, workdir):
    env = dict(PER_SECOND, DASK_BURST__BUDGET__DAILY="1000000")
    with burst_kernel(state_dir, workdir, env) as kernel:
        kernel.ok("%%burst\nimport time\ntime.sleep(1)\n")
        shown = kernel.ok("%burst cost").text
        ledger = Ledger(state_dir / "ledger.sqlite")
        job = ledger.query("SELECT * FROM jobs")[0]
        assert re.search(
            r"default\s+local\s+1\s+\$3,600\.00/h notional\s+\$\d+\.00 notional", shown
        )
        cluster_nodes = ledger.nodes()
        expected_job = cost.usd(cost.job_cost(job, cluster_nodes, now=time.time()))
        assert re.search(rf"{job['id']}\s.*\sdone\s+\{expected_job} notional", shown), shown
        assert re.search(r"daily budget: \$[\d,]+\.\d\d left of \$1,000,000\.00", shown), shown
        assert "notional: a configured internal price" in shown

        assert "stopped default" in kernel.ok("%burst down").stdout
        (head,) = ledger.query("SELECT * FROM nodes")
        assert head["price_per_hour"] == 3600.0 and head["stopped"] is not None
        # The ledger's cost is price x the billed seconds between its own launch and stop.
        ran = Decimal(f"{head['stopped']:.6f}") - Decimal(f"{head['started']:.6f}")
        bill = D(3600) * math.ceil(ran) / 3600
        assert cost.node_cost(head, now=time.time()) == bill
        after = kernel.ok("%burst cost").text
        assert "running now: nothing" in after
        assert (
            f"this session {cost.usd(bill)} notional · today {cost.usd(bill)} notional · "
            f"this month {cost.usd(bill)} notional"
        ) in after, after
        run = kernel.execute("%burst cost everything")
        assert run.evalue == "burst: %burst cost takes no arguments"


_SAVES_WHEN_ASKED = (
    "%%burst budget=15\n"
    "import time\n"
    "state = {{'step': 0}}\n"
    "burst.on_preempt(lambda: burst.checkpoint(dict(state), step=state['step']))\n"
    "print('running', flush=True)\n"
    "while {condition}:\n"
    "    state['step'] += 1\n"
    "    time.sleep(0.01)\n"
    "steps = state['step']\n"
)


@pytest.fixture
def priced_kernel(state_dir: pathlib.Path, workdir: pathlib.Path):
    """$1 a second on the local provider; a cell near its budget gets 2 s to save its work."""
    with burst_kernel(state_dir, workdir, dict(PER_SECOND, DASK_BURST__BUDGET__GRACE="2")) as k:
        yield k


def test_a_budget_stops_the_job_after_a_checkpoint_before_it_is_passed(priced_kernel, state_dir):
    run = priced_kernel.execute(_SAVES_WHEN_ASKED.format(condition="True"), timeout=120)
    assert run.status == "error" and run.traceback == [run.evalue], run.error_text
    ledger = Ledger(state_dir / "ledger.sqlite")
    job = ledger.query("SELECT * FROM jobs")[0]
    stopped_at = re.fullmatch(
        r"burst: the job was stopped at \$(\d+\.\d\d) of its budget=\$15\.00 \(projected to pass "
        rf"it within \d+ s\); its latest checkpoint \(step (\d+)\): %burst checkpoints {job['id']}",
        run.evalue,
    )
    assert stopped_at, run.evalue
    assert D(stopped_at.group(1)) < 15
    assert "burst: this job's budget=$15.00 will be reached within" in run.stderr
    # The checkpoint the cell saved when asked is there, at the step the message names.
    listing = priced_kernel.ok(f"%burst checkpoints {job['id']}").text
    assert f" {stopped_at.group(2)} " in listing, listing
    assert (job["status"], job["stop_reason"], job["error"]) == ("failed", "budget", run.evalue)
    assert cost.job_cost(job, ledger.nodes(), now=time.time()) < 15  # ended: its cost is final
    assert json.loads(job["options"])["budget"] == "15"


def test_a_cell_that_ends_itself_when_asked_keeps_its_results(priced_kernel, state_dir):
    run = priced_kernel.execute(
        _SAVES_WHEN_ASKED.format(condition="not burst.preempting"), timeout=120
    )
    assert run.status == "ok", run.error_text
    assert "burst: this job's budget=$15.00 will be reached within" in run.stderr
    assert re.search(
        r"burst: the cell ended by itself at \$\d+\.\d\d of its budget=\$15\.00", run.stderr
    )
    assert int(priced_kernel.ok("print(steps)").stdout) > 0
    job = Ledger(state_dir / "ledger.sqlite").query("SELECT * FROM jobs")[0]
    assert (job["status"], job["stop_reason"]) == ("done", "budget")
