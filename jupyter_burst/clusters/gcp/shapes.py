"""What an offer's name asks Compute Engine for: a machine type, and the GPUs it carries.

Accelerator-optimized machine types (G2, A2, A3) come with their GPUs; an N1 machine gets
them attached (``guestAccelerators``). The catalog names the second kind
``<machine type>+<gpu>x<count>`` (``n1-standard-8+t4x1``) so that an offer is one word.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from jupyter_burst.errors import ClusterError

# Compute Engine's accelerator type of each GPU an N1 machine can have attached.
ATTACHABLE = {"t4": "nvidia-tesla-t4", "v100": "nvidia-tesla-v100", "p100": "nvidia-tesla-p100"}
# The accelerator type built into each accelerator-optimized family, and GPUs per name suffix.
_BUILT_IN = (
    (re.compile(r"^g2-standard-(\d+)$"), "nvidia-l4"),
    (re.compile(r"^a2-highgpu-(\d+)g$"), "nvidia-tesla-a100"),
    (re.compile(r"^a2-megagpu-(\d+)g$"), "nvidia-tesla-a100"),
    (re.compile(r"^a2-ultragpu-(\d+)g$"), "nvidia-a100-80gb"),
    (re.compile(r"^a3-highgpu-(\d+)g$"), "nvidia-h100-80gb"),
)
# GPUs of each G2 size (its name counts vCPUs, not GPUs).
_G2_GPUS = {4: 1, 8: 1, 12: 1, 16: 1, 24: 2, 32: 1, 48: 4, 96: 8}
_ATTACHED = re.compile(r"^(?P<machine>n1-[a-z]+-\d+)\+(?P<gpu>[a-z0-9]+)x(?P<count>\d+)$")


@dataclass(frozen=True)
class Shape:
    machine_type: str
    accelerator: str  # Compute Engine's accelerator type (nvidia-l4, nvidia-tesla-t4, ...)
    count: int
    attached: bool  # True: guestAccelerators on the insert; False: built into the machine type


def shape(name: str) -> Shape:
    """The machine an offer's name asks for; a name we cannot read is one line."""
    attached = _ATTACHED.match(name)
    if attached and attached["gpu"] in ATTACHABLE:
        return Shape(attached["machine"], ATTACHABLE[attached["gpu"]], int(attached["count"]), True)
    for pattern, accelerator in _BUILT_IN:
        built = pattern.match(name)
        if built:
            size = int(built[1])
            count = _G2_GPUS.get(size, 0) if name.startswith("g2-") else size
            if count:
                return Shape(name, accelerator, count, False)
    raise ClusterError(
        f"'{name}' is no GCP GPU machine we know: give an accelerator-optimized type "
        "(g2-standard-8, a2-highgpu-1g, a3-highgpu-8g) or n1-standard-N+t4xK / +v100xK"
    )
