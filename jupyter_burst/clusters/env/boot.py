"""The part of a node's boot script that gives it the notebook's environment (bash).

With the archive of the lock's hash in the cluster's object store, the node downloads and
unpacks it: no resolver, no installer. Without, it builds the lock with ``uv`` (a managed
Python of the kernel's minor version: nothing of the image's Python is used), starting
from the newest archive of another hash when there is one, so that ``uv pip sync`` only
adds and removes what differs; then it stores its own archive for the next node. The
archive is made from a hard-linked snapshot of the environment taken before the node
starts, so the node's processes writing bytecode cannot change it while it is packed.

The script leaves ``$PY``, the environment's interpreter. Its lines starting with
``burst-env:`` say what happened (the boot log: cached or built, in how many seconds).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from jupyter_burst.clusters.env.lock import NodeLock

_UV_INSTALLER = "https://astral.sh/uv/{version}/install.sh"


@dataclass(frozen=True)
class EnvBoot:
    """Where a node finds its environment; the URLs are short-lived and hold no credential."""

    lock: NodeLock
    uv_version: str
    index_arguments: tuple[str, ...] = ()
    archive_url: str = ""  # GET: the archive of this hash, when the store has it
    upload_url: str = ""  # PUT: where this node stores the archive it built (the head only)
    base_url: str = ""  # GET: the newest archive of another hash, to start a build from
    # (path under the node's wheels folder, GET) of the wheels built here
    wheel_urls: tuple[tuple[str, str], ...] = ()


def render(env: EnvBoot) -> str:
    lock = env.lock
    q = shlex.quote
    wheels = "\n".join(
        f'    curl -fsS --retry 3 --create-dirs {q(url)} -o "$ROOT/wheels/"{q(path)}'
        for path, url in env.wheel_urls
    )
    index = " ".join(q(a) for a in env.index_arguments)
    installer = _UV_INSTALLER.format(version=env.uv_version) if env.uv_version else ""
    # The lock's local wheels are written with ${ROOT} expanded: the here-document is unquoted,
    # and a lock line has no other `$` (names, versions and URLs of an index).
    lock_text = "\n".join(line.rstrip() for line in lock.lines)
    return f"""
# The notebook's environment, {lock.hash} ({lock.spec.describe()}).
ENV="$ROOT/env"
ENV_HASH={q(lock.hash)}
ENV_ARCHIVE={q(env.archive_url)}
ENV_UPLOAD={q(env.upload_url)}
ENV_BASE={q(env.base_url)}
export HOME="${{HOME:-/root}}"  # cloud-init may run user data without one; uv wants it
export UV_CACHE_DIR="${{UV_CACHE_DIR:-$ROOT/uv-cache}}"
export UV_PYTHON_INSTALL_DIR="$ROOT/python"
export UV_PYTHON_PREFERENCE="${{UV_PYTHON_PREFERENCE:-only-managed}}"
ENV_START=$SECONDS
burst_phase environment
burst_unpack() {{  # an archive made on another node, whose folder may have had another path
    rm -rf "$ENV" "$ROOT/python"
    tar -I zstd -xf "$1" -C "$ROOT"
    rm -f "$1"
    local old
    old=$(cat "$ENV/.burst-root")
    if [ "$old" != "$ROOT" ]; then
        sed -i "s#$old/#$ROOT/#g" "$ENV/pyvenv.cfg"
        for link in "$ENV"/bin/python*; do
            local target
            target=$(readlink "$link" || true)
            case "$target" in "$old"/*) ln -sfn "$ROOT/${{target#"$old"/}}" "$link" ;; esac
        done
        echo "$ROOT" > "$ENV/.burst-root"
    fi
}}
if [ -n "$ENV_ARCHIVE" ] && curl -fsS --retry 3 "$ENV_ARCHIVE" -o "$ROOT/env.tar.zst"; then
    burst_unpack "$ROOT/env.tar.zst"
    echo "burst-env: $ENV_HASH unpacked from its archive in $((SECONDS - ENV_START)) s (no resolver run)"
    burst_phase environment "cached, $((SECONDS - ENV_START)) s"
else
    burst_phase environment building
    command -v zstd >/dev/null || {{ apt-get install -y -q zstd >/dev/null 2>&1 || true; }}
    if ! command -v uv >/dev/null; then
        curl -LsSf {q(installer)} | env UV_INSTALL_DIR="$ROOT/bin" UV_NO_MODIFY_PATH=1 sh
        export PATH="$ROOT/bin:$PATH"
    fi
    mkdir -p "$ROOT/wheels"
{wheels}
    cat > "$ROOT/requirements.txt" <<BURST_LOCK
{lock_text}
BURST_LOCK
    if [ -n "$ENV_BASE" ] && curl -fsS --retry 3 "$ENV_BASE" -o "$ROOT/base.tar.zst"; then
        burst_unpack "$ROOT/base.tar.zst"
        echo "burst-env: starting from $(cat "$ENV/.burst-hash" 2>/dev/null || echo another) (uv adds and removes what differs)"
    else
        uv venv --quiet --relocatable --python {q(lock.python)} "$ENV"
    fi
    # A uv that crashed (ended by a signal: seen once, a segfault after every package was
    # installed) is run once more, as the sync is idempotent; an error of its own is not.
    uv_status=0
    uv pip sync --python "$ENV/bin/python" {index} "$ROOT/requirements.txt" || uv_status=$?
    if [ "$uv_status" -gt 128 ]; then
        echo "burst-env: uv ended by signal $((uv_status - 128)); running it once more"
        uv pip sync --python "$ENV/bin/python" {index} "$ROOT/requirements.txt"
    elif [ "$uv_status" -ne 0 ]; then
        exit "$uv_status"
    fi
    echo "$ROOT" > "$ENV/.burst-root"
    echo "$ENV_HASH" > "$ENV/.burst-hash"
    echo "burst-env: $ENV_HASH built with uv in $((SECONDS - ENV_START)) s"
    burst_phase environment "built, $((SECONDS - ENV_START)) s"
    if [ -n "$ENV_UPLOAD" ]; then
        rm -rf "$ROOT/snapshot" && mkdir "$ROOT/snapshot"
        cp -al "$ENV" "$ROOT/snapshot/env"
        if [ -d "$ROOT/python" ]; then cp -al "$ROOT/python" "$ROOT/snapshot/python"; fi
        (
            tar -C "$ROOT/snapshot" -I 'zstd -T0 -3' -cf "$ROOT/env-upload.tar.zst" . &&
                curl -fsS --retry 3 -T "$ROOT/env-upload.tar.zst" "$ENV_UPLOAD" &&
                echo "burst-env: $ENV_HASH stored for the next node"
            rm -rf "$ROOT/snapshot" "$ROOT/env-upload.tar.zst"
        ) &
    fi
fi
PY="$ENV/bin/python"
"""
