"""``%burst env``: the environment cloud nodes get from this kernel, its hash, and who has it.

The same pre-flight a launch runs (:func:`jupyter_burst.clusters.env.lock.prepare`), so what
it says is what a launch would say, and a refusal here is the one a launch would give.
"""

from __future__ import annotations

import pathlib

from jupyter_burst import config
from jupyter_burst.clusters import records
from jupyter_burst.clusters.aws import env_store, sdk
from jupyter_burst.clusters.env.lock import PLATFORM_WORDS, prepare


def report(state_dir: pathlib.Path) -> str:
    lock = prepare(state_dir)
    lines = [
        f"environment {lock.hash} for the {PLATFORM_WORDS} nodes of remote clusters (aws, ssh) "
        f"({lock.spec.describe()})"
    ]
    for dist in lock.spec.local:
        how = "editable, " if dist.editable else ""
        lines.append(f"  built here: {dist.name} {dist.version} ({how}from {dist.source})")
    lines += [f"  - {line}" for line in lock.said()]
    having = [
        f"{r['name']} ({r.get('provider', '?')})"
        for r in records.all_records(state_dir)
        if r.get("env") == lock.hash
    ]
    lines.append(f"  clusters with it: {', '.join(having) if having else 'none running'}")
    lines.append(f"  archive: {_archive(lock.python, lock.hash)}")
    lines.append(
        f"  packages: {' '.join(f'{n}=={v}' for n, v in sorted(lock.spec.packages.items()))}"
    )
    return "\n".join(lines)


def _archive(python: str, env_hash: str) -> str:
    """Whether the AWS bucket holds this environment's archive (the next node unpacks it)."""
    bucket = config.get("aws.bucket", None)
    if not bucket:
        return "none asked (burst.aws.bucket, where AWS nodes keep it, is not set)"
    try:
        regions = config.get("aws.regions", None) or ["us-east-1"]
        first = regions[0] if isinstance(regions, list) else str(regions).split(",")[0]
        s3 = sdk.client("s3", first.strip())
        there = env_store.has_archive(s3, str(bucket), python, env_hash)
    except Exception as exc:  # a listing must not fail for want of credentials
        return f"unknown ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    where = f"s3://{bucket}/{env_store.archive_key(python, env_hash)}"
    return f"{where} (the next node unpacks it)" if there else f"not yet built ({where})"
