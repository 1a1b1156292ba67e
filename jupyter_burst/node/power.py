"""Switching the machine off: the last thing a node's watchdog does.

On a cloud machine launched with ``InstanceInitiatedShutdownBehavior=terminate`` a
``shutdown -h now`` ends the instance, and so its bill; the local provider gives no
command (the node is a process, and its exit is the end).
"""

from __future__ import annotations

import logging
import shlex
import subprocess

log = logging.getLogger("jupyter_burst.node")


def power_off(command: str, reason: str) -> None:
    if not command:
        return
    log.warning("switching this machine off (%s): %s", reason, command)
    try:
        subprocess.run(shlex.split(command), check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        # Nothing else can be done from here; the dead-man `shutdown` timer set at launch,
        # and the instance's lifetime tag for `gc`, still end it.
        log.error("could not switch the machine off with %r: %s", command, exc)
