"""The machine image a node boots: ``burst.aws.image`` when set, else the latest public one.

With ``burst.aws.image`` unset there is nothing for the user to look up: AWS publishes the
id of the newest AWS Deep Learning Base GPU AMI (Ubuntu 22.04, with the NVIDIA driver, CUDA
and NCCL) of every region as a public Systems Manager parameter, and Canonical does the same
for plain Ubuntu Server, which an offer without GPUs boots instead. The parameter is chosen
by the offer: GPUs or not, and the architecture of its instance type (Graviton types are
arm64). Reading it is one ``ssm:GetParameter`` call through the backoff every AWS call gets;
the answer is kept per region and parameter for an hour, so that a launch and the nodes a
cell adds soon after boot the same image, while a kernel that lives for days still sees a
newer release.

Where the names come from: AWS's "Finding the ID of a DLAMI" page gives the form
``/aws/service/deeplearning/ami/$architecture/$ami_type/latest/ami-id`` (architecture
``x86_64`` or ``arm64``; ``ami_type`` the AMI's name without "deep", "learning" and "ami"),
with the names "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04)" of the release
notes; Canonical's ``/aws/service/canonical/ubuntu/PRODUCT/RELEASE/stable/current/ARCH/
VIRT/VOLUME/ami-id``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jupyter_burst import config
from jupyter_burst.clusters.aws import sdk
from jupyter_burst.clusters.offers import Offer
from jupyter_burst.errors import ClusterError

KEEP_SECONDS = 3600.0  # a looked-up image id is used again for this long (per region, parameter)


@dataclass(frozen=True)
class PublicImage:
    """A public SSM parameter that names the newest image of a kind, in each region."""

    parameter: str
    description: str


DEEP_LEARNING_GPU = {
    "x86_64": PublicImage(
        "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id",
        "AWS Deep Learning Base GPU AMI, Ubuntu 22.04",
    ),
    "arm64": PublicImage(
        "/aws/service/deeplearning/ami/arm64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id",
        "AWS Deep Learning ARM64 Base GPU AMI, Ubuntu 22.04",
    ),
}
UBUNTU_SERVER = {
    "x86_64": PublicImage(
        "/aws/service/canonical/ubuntu/server/22.04/stable/current/amd64/hvm/ebs-gp2/ami-id",
        "Ubuntu Server 22.04 LTS by Canonical",
    ),
    "arm64": PublicImage(
        "/aws/service/canonical/ubuntu/server/22.04/stable/current/arm64/hvm/ebs-gp2/ami-id",
        "Ubuntu Server 22.04 LTS by Canonical",
    ),
}

# Graviton families carry a "g" right after their generation: g5g, c7g, c7gn, m6gd, t4g, x2gd,
# im4gn, is4gen, hpc7g. x86 families never do (g4dn, g4ad, g6e, gr6, p4de, p5en). The first
# Graviton (a1) and the Grace Blackwell types (p6e-gb200) are the exceptions the rule needs.
_GRAVITON = re.compile(r"^[a-z]+\d+g[a-z]*\.|^[a-z]+\d+[a-z]*-gb\d+|^a1\.")
_AMI_ID = re.compile(r"^ami-[0-9a-f]{8,17}$")


@dataclass(frozen=True)
class Image:
    """The image a launch uses, and how it was found (said once, kept in the ledger)."""

    id: str
    how: str  # e.g. "burst.aws.image", or the public image, its parameter and region
    parameter: str | None = None  # the SSM parameter it was read from; None: configured

    def line(self) -> str:
        return f"burst: image {self.id} ({self.how})"


def architecture(instance_type: str) -> str:
    """``arm64`` for a Graviton (or Grace) instance type, else ``x86_64``."""
    return "arm64" if _GRAVITON.match(instance_type) else "x86_64"


def public_image(offer: Offer) -> PublicImage:
    """The public image an offer boots without ``burst.aws.image``: the Deep Learning Base GPU
    AMI where it has GPUs, Ubuntu Server where it has none."""
    kinds = DEEP_LEARNING_GPU if offer.gpus > 0 else UBUNTU_SERVER
    return kinds[architecture(offer.instance_type)]


class ImageCache:
    """Image ids read from SSM, per (region, parameter), for ``keep`` seconds."""

    def __init__(
        self, keep: float = KEEP_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.keep = keep
        self.clock = clock
        self._found: dict[tuple[str, str], tuple[float, str]] = {}
        self._lock = threading.Lock()

    def get(self, region: str, parameter: str, read: Callable[[], str]) -> str:
        key = (region, parameter)
        with self._lock:
            found = self._found.get(key)
            if found is not None and self.clock() - found[0] < self.keep:
                return found[1]
        value = read()  # outside the lock: a slow call must not hold up another region
        with self._lock:
            self._found[key] = (self.clock(), value)
        return value


_cache = ImageCache()


def resolve(offer: Offer, cache: ImageCache | None = None) -> Image:
    """The image for ``offer``'s nodes: ``burst.aws.image`` when set (SSM is not asked), else
    the latest public image for the offer's region and kind.

    Raises a one-line :class:`ClusterError` naming the fix when the parameter cannot be read.
    """
    configured = config.get("aws.image")
    if configured:
        return Image(str(configured), "burst.aws.image")
    kind = public_image(offer)
    region = offer.region
    value = (cache or _cache).get(region, kind.parameter, lambda: read_parameter(region, kind))
    return Image(
        value, f"{kind.description}, from SSM {kind.parameter}, region {region}", kind.parameter
    )


def read_parameter(region: str, kind: PublicImage, ssm: Any = None) -> str:
    """The image id the public parameter names in ``region`` (one ``ssm:GetParameter``;
    ``ssm``: the client to ask, else one for the region)."""
    fix = f"or set burst.aws.image to an AMI id for {region} (e.g. DASK_BURST__AWS__IMAGE=ami-...)"
    try:
        ssm = ssm or sdk.client("ssm", region)
        value = sdk.with_backoff(lambda: ssm.get_parameter(Name=kind.parameter))
        value = value["Parameter"]["Value"]
    except ClusterError:
        raise  # credentials refused: sdk said so in its own line
    except Exception as exc:
        code = sdk.error_code(exc)
        if code in ("AccessDeniedException", "UnauthorizedOperation", "AccessDenied"):
            raise ClusterError(
                f"these AWS credentials may not read the SSM parameter {kind.parameter} "
                f"(region {region}) that names the latest {kind.description}; allow "
                f"ssm:GetParameter on arn:aws:ssm:{region}::parameter/aws/service/*, {fix}"
            ) from None
        if code == "ParameterNotFound":
            raise ClusterError(
                f"SSM has no parameter {kind.parameter} in region {region} (the "
                f"{kind.description} is not published there); {fix.removeprefix('or ')}"
            ) from None
        reason = sdk.error_message(exc) if code else f"{type(exc).__name__}: {exc}"
        raise ClusterError(
            f"the latest {kind.description} could not be looked up in {region} (SSM "
            f"{kind.parameter}: {' '.join(str(reason).split())[:200]}); check the network "
            f"and credentials, {fix}"
        ) from None
    if not isinstance(value, str) or not _AMI_ID.match(value):
        raise ClusterError(
            f"the SSM parameter {kind.parameter} in {region} holds {str(value)[:40]!r}, not an "
            f"AMI id; {fix.removeprefix('or ')}"
        )
    return value
