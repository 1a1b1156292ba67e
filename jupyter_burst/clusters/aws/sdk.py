"""boto3, imported only when the AWS provider is used, and what its errors mean for us.

Every EC2 error code we act on is named here, in three kinds: the offer cannot be had now
(move on to the next offer), the API asks us to slow down (retry with backoff), and the
credentials are wrong (explain, never retry).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from jupyter_burst.errors import ClusterError

T = TypeVar("T")
# Back-off jitter from a generator of its own: a notebook's seeded `random` is not ours to move.
_jitter = random.Random()

# This offer (type, market, zone) cannot be launched now: the next offer may be.
CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientHostCapacity",
        "InsufficientReservedInstanceCapacity",
        "InsufficientCapacity",
        "InstanceLimitExceeded",
        "VcpuLimitExceeded",
        "MaxSpotInstanceCountExceeded",
        "SpotMaxPriceTooLow",
        "InsufficientFreeAddressesInSubnet",
        "Unsupported",
        "UnsupportedOperation",
    }
)
# The API asks us to slow down, or failed on its side: the same call may work in a moment.
RETRY_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
    }
)
AUTH_CODES = frozenset(
    {
        "AuthFailure",
        "UnauthorizedOperation",
        "InvalidClientTokenId",
        "ExpiredToken",
        "RequestExpired",
        "SignatureDoesNotMatch",
        "OptInRequired",
    }
)


def boto3_module():
    try:
        import boto3
    except ImportError:
        raise ClusterError(
            "the aws provider needs boto3; install it with: pip install 'jupyter-burst[aws]'"
        ) from None
    return boto3


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ClientError, else None."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    return response.get("Error", {}).get("Code")


def error_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    text = response.get("Error", {}).get("Message") or str(exc)
    return text.splitlines()[0][:300] if text else type(exc).__name__


def explain_auth(exc: BaseException) -> ClusterError:
    return ClusterError(
        f"AWS refused the credentials ({error_code(exc)}: {error_message(exc)}); check "
        "`aws sts get-caller-identity`, the profile (AWS_PROFILE) and the IAM permissions for EC2"
    )


def with_backoff(
    call: Callable[[], T],
    attempts: int = 6,
    base: float = 0.2,
    cap: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call()``, retried on throttling with exponential backoff and full jitter.

    Auth errors become one explained line; anything else is raised as it is.
    """
    for attempt in range(attempts):
        try:
            return call()
        except Exception as exc:
            code = error_code(exc)
            if code in AUTH_CODES:
                raise explain_auth(exc) from None
            if code not in RETRY_CODES or attempt == attempts - 1:
                raise
            sleep(_jitter.uniform(0, min(cap, base * 2**attempt)))
    raise AssertionError("unreachable")


def client(service: str, region: str, endpoint_url: str | None = None) -> Any:
    """A boto3 client whose own retries are few: ours (``with_backoff``) decide."""
    boto3 = boto3_module()
    from botocore.config import Config

    return boto3.session.Session().client(
        service,
        region_name=region,
        endpoint_url=endpoint_url,
        # SigV4 everywhere: presigned URLs then carry their expiry (X-Amz-Expires).
        config=Config(retries={"max_attempts": 2, "mode": "standard"}, signature_version="s3v4")
        if service == "s3"
        else Config(retries={"max_attempts": 2, "mode": "standard"}),
    )


def ec2_clients() -> Callable[[str], Any]:
    """EC2 clients by region, each made once when first asked for (``provision.Clients``)."""
    made: dict[str, Any] = {}

    def get(region: str):
        if region not in made:
            made[region] = client("ec2", region)
        return made[region]

    return get
