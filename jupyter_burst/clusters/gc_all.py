"""``%burst gc``: what of ours runs without a live cluster, on every cloud we can ask.

AWS as it always was (its credentials, ``--region``); Lambda Cloud too where the user has a
Lambda API key. A cloud that cannot be asked is one line of the answer when another could
be: a Lambda user without AWS credentials still gets their Lambda machines listed.
"""

from __future__ import annotations

from collections.abc import Sequence

from jupyter_burst.clusters.aws import gc as aws_gc
from jupyter_burst.clusters.lambda_cloud import api as lambda_api
from jupyter_burst.clusters.lambda_cloud import gc as lambda_gc
from jupyter_burst.errors import ClusterError


def command(words: Sequence[str], how_to_confirm: str) -> str:
    """What ``%burst gc [--yes] [--region a,b]`` prints."""
    yes, _ = aws_gc.parse_words(words)  # refuses what it does not know, before any cloud
    if lambda_api.api_key() is None:
        return aws_gc.command(words, how_to_confirm)  # AWS alone, exactly as before
    try:
        parts = [aws_gc.command(words, how_to_confirm)]
    except ClusterError as exc:
        parts = [f"{exc} (AWS not cleaned up)"]
    parts.append(lambda_gc.command(yes, how_to_confirm))
    return "\n".join(parts)
