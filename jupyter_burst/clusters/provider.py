"""The one small interface every provider answers (issue #5 adds offers and prices)."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class ClusterRequest:
    """What a cell needs from a cluster."""

    name: str
    slots: int
    idle_minutes: float
    state_dir: pathlib.Path


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
