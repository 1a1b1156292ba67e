"""The one small interface every provider answers.

Optional methods, used where a provider has them: ``offers(OfferRequest) -> list[Offer]``
(``%burst offers`` and the choice across providers), ``price_per_hour(ClusterRequest)``
(the daily budget asks before a launch), ``settle(record)``: write in the ledger when
the cluster's machines stopped, by the provider's own records, for machines that ended by
themselves while no kernel watched, and ``grow(record, request, have) -> record``: add
worker nodes to a running cluster that has ``have`` of the ``request.slots`` slots a cell
needs (quoted and budget-checked first; the nodes boot with ``--extra`` and the head powers
them off when idle). Without ``grow`` such a cell is refused in one line with the fix.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Any, Protocol

from jupyter_burst.clusters.offers import Plan


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
