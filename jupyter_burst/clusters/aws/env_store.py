"""The notebooks' environments in S3: one archive per lock hash, shared by every cluster of the bucket.

``s3://BUCKET/jupyter-burst/envs/pyX.Y/HASH.tar.zst`` is written once, by the head node that
built it, through a presigned PUT URL; any later node with the same hash gets a presigned
GET URL for it and unpacks it. The wheels built in the kernel go to
``jupyter-burst/wheels/IDENTITY/FILE`` once. Nodes hold no AWS credential: every URL is
presigned here, for the boot's length only.
"""

from __future__ import annotations

from typing import Any

from jupyter_burst.clusters.aws import sdk
from jupyter_burst.clusters.env.boot import EnvBoot
from jupyter_burst.clusters.env.lock import NodeLock, node_wheel_path
from jupyter_burst.clusters.env.uv_tool import index_arguments, uv_version

PREFIX = "jupyter-burst/envs/"
_WHEELS = "jupyter-burst/wheels/"


def archive_key(python: str, env_hash: str) -> str:
    return f"{PREFIX}py{python}/{env_hash}.tar.zst"


def has_archive(s3: Any, bucket: str, python: str, env_hash: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=archive_key(python, env_hash))
        return True
    except Exception as exc:
        if sdk.error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return False
        raise


def archived_hashes(s3: Any, bucket: str, python: str) -> list[tuple[str, float]]:
    """The bucket's archived environments for Python ``python``, newest first: (hash, when)."""
    found: list[tuple[str, float]] = []
    token = None
    prefix = f"{PREFIX}py{python}/"
    while True:
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if token:
            kwargs["ContinuationToken"] = token
        page = s3.list_objects_v2(**kwargs)
        for item in page.get("Contents", []):
            key = item["Key"]
            if key.endswith(".tar.zst"):
                found.append(
                    (key[len(prefix) : -len(".tar.zst")], item["LastModified"].timestamp())
                )
        token = page.get("NextContinuationToken")
        if not token:
            return sorted(found, key=lambda f: -f[1])


def env_boot(s3: Any, bucket: str, lock: NodeLock, seconds: float, upload: bool) -> EnvBoot:
    """What a node needs to get ``lock``'s environment: the archive when there is one, else
    the wheels built here, the newest other archive to start from and (``upload``: the
    head) where to store what it builds. URLs valid for ``seconds``."""

    def get(key: str) -> str:
        return s3.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=int(seconds)
        )

    common = {"lock": lock, "uv_version": uv_version(), "index_arguments": tuple(index_arguments())}
    if has_archive(s3, bucket, lock.python, lock.hash):
        return EnvBoot(**common, archive_url=get(archive_key(lock.python, lock.hash)))
    wheel_urls = []
    for wheel in lock.wheels:
        key = f"{_WHEELS}{wheel.identity[:32]}/{wheel.path.name}"
        try:
            s3.head_object(Bucket=bucket, Key=key)
        except Exception as exc:
            if sdk.error_code(exc) not in ("404", "NoSuchKey", "NotFound"):
                raise
            s3.upload_file(str(wheel.path), bucket, key)
        wheel_urls.append((node_wheel_path(wheel), get(key)))
    others = [h for h, _ in archived_hashes(s3, bucket, lock.python) if h != lock.hash]
    upload_url = ""
    if upload:
        upload_url = s3.generate_presigned_url(
            "put_object",
            Params={"Bucket": bucket, "Key": archive_key(lock.python, lock.hash)},
            ExpiresIn=int(seconds),
        )
    return EnvBoot(
        **common,
        upload_url=upload_url,
        base_url=get(archive_key(lock.python, others[0])) if others else "",
        wheel_urls=tuple(wheel_urls),
    )
