"""An example jupyter-burst provider: the shape a third-party cloud takes, in one small file.

It rents one made-up instance type, ``example.2gpu`` (2 GPUs of 24 GiB at $0.50/h, in
``example-1``), and "launches" it as processes of this machine by handing the work to the
local provider, so it runs anywhere. A real provider starts machines in ``launch`` instead;
the rest of its shape is the same.
"""

from __future__ import annotations

from typing import Any

from jupyter_burst.clusters.local import LocalProvider
from jupyter_burst.clusters.offers import Offer, OfferRequest, Plan
from jupyter_burst.clusters.plans import cheapest
from jupyter_burst.clusters.provider import ClusterRequest

OFFER = Offer(
    provider="example",
    instance_type="example.2gpu",
    gpus=2,
    gpu_model="Example GPU",
    gpu_mem_gib=24.0,
    vcpus=8,
    ram_gib=32.0,
    region="example-1",
    spot=False,
    price_per_hour=0.50,
)


class ExampleProvider:
    name = "example"  # the entry point's name: records and the ledger carry it

    def __init__(self) -> None:
        # The local provider does the starting; under our name, so the node writes our name
        # in the cluster's record and a later cell (or %burst down) comes back to us.
        self._machine = LocalProvider()
        self._machine.name = self.name

    def offers(self, request: OfferRequest) -> list[Offer]:
        """What we rent; %burst offers lists it and a plain %%burst gpus=N may choose it."""
        return [OFFER]

    def plan(self, request: ClusterRequest) -> Plan:
        """The plan %%burst chose and announced, else our cheapest for the request."""
        if request.plan is not None and request.plan.offer.provider == self.name:
            return request.plan
        wanted = OfferRequest(
            gpus=request.slots,
            gpu_mem_gib=request.gpu_mem_gib,
            spot=request.spot,
            regions=request.regions,
        )
        return cheapest(self.offers(wanted), wanted)

    def price_per_hour(self, request: ClusterRequest) -> float:
        """What the launch would cost an hour: burst.budget.daily asks before it starts."""
        return self.plan(request).price_per_hour

    def launch(self, request: ClusterRequest) -> dict[str, Any]:
        """Start the cluster; return its record once its scheduler accepts connections."""
        plan = self.plan(request)
        print(f"burst: example provider starting {plan.describe()}", flush=True)
        return self._machine.launch(request)

    def is_alive(self, record: dict[str, Any]) -> bool:
        return self._machine.is_alive(record)

    def terminate(self, record: dict[str, Any]) -> None:
        self._machine.terminate(record)
