"""``%burst gc``: what of ours runs without a live cluster, on every cloud we can ask.

AWS as it always was (its credentials, ``--region``); Lambda Cloud too where the user has a
Lambda API key; GCP where it is configured (``gcp`` in ``burst.providers``, or
``burst.gcp.project``). A cloud that cannot be asked is one line of the answer when another
could be: a Lambda user without AWS credentials still gets their Lambda machines listed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from jupyter_burst import config
from jupyter_burst.clusters.aws import gc as aws_gc
from jupyter_burst.clusters.gcp import gc as gcp_gc
from jupyter_burst.clusters.lambda_cloud import api as lambda_api
from jupyter_burst.clusters.lambda_cloud import gc as lambda_gc
from jupyter_burst.errors import ClusterError


def gcp_configured() -> bool:
    return "gcp" in config.names("providers") or bool(config.get("gcp.project", None))


def command(words: Sequence[str], how_to_confirm: str) -> str:
    """What ``%burst gc [--yes] [--region a,b]`` prints."""
    yes, _ = aws_gc.parse_words(words)  # refuses what it does not know, before any cloud
    others: list[tuple[str, Callable[[], str]]] = []
    if lambda_api.api_key() is not None:
        others.append(("Lambda", lambda: lambda_gc.command(yes, how_to_confirm)))
    if gcp_configured():
        others.append(("GCP", lambda: gcp_gc.command(yes, how_to_confirm)))
    if not others:
        return aws_gc.command(words, how_to_confirm)  # AWS alone, exactly as before
    parts = []
    for cloud, part in [("AWS", lambda: aws_gc.command(words, how_to_confirm)), *others]:
        try:
            parts.append(part())
        except ClusterError as exc:
            parts.append(f"{exc} ({cloud} not cleaned up)")
    return "\n".join(parts)
