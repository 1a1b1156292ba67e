"""The one small interface every provider answers.

Optional methods, used where a provider has them: ``offers(OfferRequest) -> list[Offer]``
(``%burst offers`` and the choice across providers), ``price_per_hour(ClusterRequest)``
(the daily budget asks before a launch), ``settle(record)``: write in the ledger when
the cluster's machines stopped, by the provider's own records, for machines that ended by
themselves while no kernel watched, and ``grow(record, request, have) -> record``: add
worker nodes to a running cluster that has ``have`` of the ``request.slots`` slots a cell
needs (quoted and budget-checked first; the nodes boot with ``--extra`` and the head powers
them off when idle). Without ``grow`` such a cell is refused in one line with the fix.

``request.phases`` (optional to use): the start's recorder; ``launch`` reports the phases
only it knows (machines launched k/N, booting, the environment, workers joined) through
:func:`jupyter_burst.clusters.start_phases.of`, as that module's docstring shows. A provider
that ignores it still works: its start then shows as ``launching`` until it is up.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from jupyter_burst.clusters.offers import Plan

if TYPE_CHECKING:
    from jupyter_burst.clusters.start_phases import StartPhases


@dataclass(frozen=True)
class ClusterRequest:
    """What a cell needs from a cluster."""

    name: str
    slots: int
    idle_minutes: float
    state_dir: pathlib.Path
    spot: bool | None = None  # spot=yes|no; None: the provider's default (AWS: an on-demand head)
    # gpu_mem=: memory per GPU at least (or the gpus=auto estimate)
    gpu_mem_gib: float | None = None
    regions: tuple[str, ...] = ()  # region=a,b; empty: the provider's own
    # The plan %%burst already chose across providers and announced: launch it as is, so the
    # machine that starts is the one the user was told about.
    plan: Plan | None = None
    # max_hourly=: the dollars an hour the cell agreed its launch may cost, above
    # burst.max-hourly (clusters/launch_checks.py); None: the setting's cap holds.
    max_hourly: float | None = None
    # Where the start spends its time (clusters/start_phases.py); None where nobody records it.
    # Not part of the request's identity: a quote made for it holds for its launch.
    phases: StartPhases | None = field(default=None, compare=False, repr=False)


class Provider(Protocol):
    name: str

    def launch(self, request: ClusterRequest) -> dict[str, Any]:
        """Start a cluster; return its record once its scheduler accepts connections."""
        ...

    def is_alive(self, record: dict[str, Any]) -> bool:
        """Whether the cluster's head is still there (cheap; no connection)."""
        ...

    def terminate(self, record: dict[str, Any]) -> None:
        """Stop the cluster's machines without the scheduler's help."""
        ...
