"""Pre-warm: a ``%%burst`` cell's cluster starts while the cell is still being written.

Off by default (``burst.prewarm``). ``%burst prewarm on`` turns it on in a Dask config file
of its own (``jupyter-burst-prewarm.yaml`` in the Dask config folder, which the Jupyter
server and every kernel read) and says what it costs: an idle cluster of the default shape
at its price per hour, until it stops after ``burst.idle`` minutes with nothing to run.

The JupyterLab extension notices a code cell whose first line is ``%%burst ...`` once its
body is being written, and asks the server (``POST /jupyter-burst/prewarm``), which runs
:func:`warm` in a process of its own (``python -m jupyter_burst.tools.prewarm``; the server
never imports the kernel's code). :func:`warm` reads the line with the cell's own grammar,
chooses the provider as the cell would, and starts the cluster through the cell's own
:func:`jupyter_burst.kernel.cell.connect`: the same name, provider and state folder, so the
cell finds it running. It starts nothing when pre-warm is off, for a line that does not
parse, for ``gpus=auto`` (only the cell's model decides it), or when that cluster runs or
is being started already. A pre-warmed cluster is a normal one: unused, it stops after its
idle time, and its start is in the ledger with the purpose ``prewarm``.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import dask.config

from jupyter_burst import config
from jupyter_burst.clusters import records, start_phases
from jupyter_burst.clusters.launch_checks import launch_price
from jupyter_burst.clusters.provider import ClusterRequest
from jupyter_burst.clusters.registry import get_provider
from jupyter_burst.driver import cluster, placement
from jupyter_burst.errors import BurstError, OptionError
from jupyter_burst.kernel.cell import connect
from jupyter_burst.kernel.options import CellOptions, parse
from jupyter_burst.store.budget import usd
from jupyter_burst.store.cost import NOTIONAL_PROVIDERS
from jupyter_burst.store.ledger import shared_ledger

FILE_NAME = "jupyter-burst-prewarm.yaml"
USAGE = "write %burst prewarm on, %burst prewarm off, or %burst prewarm to see which it is"
OFF = "pre-warm is off (burst.prewarm); %burst prewarm on turns it on"

Answer = dict[str, Any]


def enabled() -> bool:
    """``burst.prewarm``, as the files and variables say now."""
    config.refresh()
    return config.flag("prewarm", False)


def settings_path() -> pathlib.Path:
    """Where ``%burst prewarm on|off`` writes: the user's Dask config folder (``DASK_CONFIG``)."""
    return pathlib.Path(dask.config.PATH) / FILE_NAME


def command(args: list[str]) -> str:
    """``%burst prewarm [on|off]``: what it is (and costs), after turning it on or off."""
    if len(args) > 1 or (args and args[0] not in ("on", "off")):
        raise OptionError(USAGE)
    if args:
        _write(args[0] == "on")
    on = enabled()
    if args and on != (args[0] == "on"):
        # A DASK_BURST__PREWARM variable (or a config file read after ours) says otherwise.
        raise OptionError(
            f"burst.prewarm is still {'on' if on else 'off'}: a DASK_BURST__PREWARM variable or "
            "another Dask config file sets it; change it there"
        )
    if not on:
        return f"burst: {OFF}"
    return (
        "burst: pre-warm is on: in JupyterLab, a cell that begins with %%burst starts its "
        f"cluster while you write its body, so that it is up when the cell runs. {quote()}. "
        "%burst prewarm off turns it off"
    )


def quote(options: CellOptions | None = None) -> str:
    """What an idle cluster of the cell's shape (the default: ``%%burst`` alone) costs an hour,
    and when it stops; why not, where it cannot be quoted."""
    options = options if options is not None else parse("")
    try:
        placed = placement.resolve(options)
        if placed.plan is not None:
            price = Decimal(repr(placed.plan.price_per_hour))
            notional = placed.plan.offer.notional
        else:
            request = ClusterRequest(
                name=placed.cluster,
                slots=placed.gpus,
                idle_minutes=placed.idle,
                state_dir=config.state_dir(),
                spot=placed.spot,
                gpu_mem_gib=placed.gpu_mem,
                regions=placed.regions,
            )
            price = launch_price(get_provider(placed.provider), request)
            notional = placed.provider in NOTIONAL_PROVIDERS
    except BurstError as exc:
        return f"Its cost could not be quoted ({_one_line(exc)})"
    return (
        f"A plain %%burst cell's cluster (gpus={placed.gpus} on {placed.provider}) costs "
        f"{usd(price)}/h{' notional' if notional else ''} while it waits for its cell, and "
        f"stops after {placed.idle:g} min idle if none comes (burst.idle, or the cell's idle=)"
    )


def warm(line: str, report: Callable[[Answer], None] | None = None) -> Answer:
    """Start the cluster of a ``%%burst`` line (``line``: what follows ``%%burst``) unless it
    runs, is starting, or must not be started; returns the last of the answers, each handed
    to ``report`` as it is decided: ``off``, ``invalid``, ``skipped``, ``running``, or
    ``starting`` and then ``running`` or ``failed``."""

    def say(answer: Answer) -> Answer:
        if report is not None:
            report(answer)
        return answer

    try:
        if not enabled():
            return say({"state": "off", "message": OFF})
        options = parse(line)
        if options.gpus_auto:
            return say(
                {
                    "state": "skipped",
                    "message": "gpus=auto is decided from the cell's model when it runs: "
                    "nothing was pre-warmed",
                }
            )
        options = placement.resolve(options)
    except BurstError as exc:
        return say({"state": "invalid", "message": _one_line(exc)})
    name, provider = options.cluster, str(options.provider)
    where = {"cluster": name, "provider": provider, "gpus": options.gpus}
    state_dir = config.state_dir()
    if _running(state_dir, name, provider):
        return say({**where, "state": "running", "message": f"cluster '{name}' already runs"})
    if start_phases.under_way(shared_ledger(state_dir), name, provider) is not None:
        return say({**where, "state": "starting", "message": f"cluster '{name}' is starting"})
    say({**where, "state": "starting", "message": f"pre-warming cluster '{name}' on {provider}"})
    try:
        # The cell's own path; it holds the cluster's lock while it starts, so that a cell
        # run meanwhile (or another pre-warm) waits and attaches instead of starting another.
        handle = connect(options, purpose="prewarm")
    except BurstError as exc:
        return say({**where, "state": "failed", "message": _one_line(exc)})
    try:
        return say(
            {**where, "state": "running", "id": handle.id, "message": f"cluster '{name}' is up"}
        )
    finally:
        cluster.forget_all()  # the cluster runs on; this process's connection to it goes


def _running(state_dir: pathlib.Path, name: str, provider: str) -> bool:
    record = records.read_record(state_dir, name, provider)
    return record is not None and get_provider(provider).is_alive(record)


def _write(on: bool) -> None:
    """The setting, in a file of its own that is replaced whole (a reader sees old or new)."""
    config.write_config_file(
        settings_path(),
        "# Written by %burst prewarm on|off (jupyter-burst): whether JupyterLab starts a\n"
        "# %%burst cell's cluster while the cell is written.\n",
        {"prewarm": on},
    )


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
