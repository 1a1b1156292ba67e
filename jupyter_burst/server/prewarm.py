"""The server's side of pre-warm: the JupyterLab extension saw a ``%%burst`` cell being
written and asks for its cluster to be started (``POST /jupyter-burst/prewarm``).

With ``burst.prewarm`` off it answers ``off`` and starts nothing. Otherwise it runs
``python -m jupyter_burst.tools.prewarm --json -- LINE`` in a process of its own session:
there the line is read with the kernel's own grammar and the cluster started through the
cell's own code (:mod:`jupyter_burst.kernel.prewarm`), which the server may not import,
and a start of many minutes holds no server thread and outlives a server restart. The
server answers that process's first decision (``invalid``, ``running``, ``starting`` ...)
and logs the rest. At most one process per line runs at a time; a second line for the same
cluster finds its start under way in the ledger, or waits on the cluster's lock and
attaches: a cluster is never started twice.
"""

from __future__ import annotations

import json
import logging
import queue
import subprocess
import sys
import threading
from typing import Any

from jupyter_burst import config

log = logging.getLogger("jupyter_burst.server.prewarm")

MAX_LINE = 2000
FIRST_ANSWER_SECONDS = 60.0
OFF = "pre-warm is off (burst.prewarm); %burst prewarm on turns it on"

_lock = threading.Lock()
_running: dict[str, subprocess.Popen] = {}
_latest: dict[str, dict[str, Any]] = {}  # each running process's latest answer


def line_of(body: Any) -> str:
    """``{"line": "gpus=2 cluster=exp1"}`` checked: what follows ``%%burst``, one line."""
    if not isinstance(body, dict) or not isinstance(body.get("line"), str):
        raise ValueError(
            'send JSON {"line": "..."}: what follows %%burst on the cell\'s first line'
        )
    line = body["line"]
    if "\n" in line or "\r" in line or "\0" in line or len(line) > MAX_LINE:
        raise ValueError(f"line must be one line of at most {MAX_LINE} characters")
    return line.strip()


def prewarm(line: str) -> dict[str, Any]:
    """Start the cluster of ``%%burst LINE`` in a process of its own; its first answer."""
    # %burst prewarm on|off writes a config file while the server runs: read it as it is now.
    if not config.flag("prewarm", False, now=True):
        return {"state": "off", "message": OFF}
    key = " ".join(line.split())
    with _lock:
        running = _running.get(key)
        if running is not None and running.poll() is None:
            return _latest.get(key) or {
                "state": "starting",
                "message": "a pre-warm of this line is under way",
            }
        process = subprocess.Popen(
            [sys.executable, "-m", "jupyter_burst.tools.prewarm", "--json", "--", line],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # Its own session: a Ctrl-C of the server's terminal does not cut a start short.
            start_new_session=True,
        )
        _running[key] = process
        _latest.pop(key, None)
    answers: queue.Queue[dict[str, Any] | None] = queue.Queue()
    threading.Thread(
        target=_follow, args=(key, process, answers), name="burst-prewarm", daemon=True
    ).start()
    try:
        first = answers.get(timeout=FIRST_ANSWER_SECONDS)
    except queue.Empty:
        return {"state": "starting", "message": "the pre-warm has not answered yet"}
    if first is None:
        return {"state": "failed", "message": "the pre-warm process ended without an answer"}
    return first


def _follow(key: str, process: subprocess.Popen, answers: queue.Queue) -> None:
    """Hand on the process's first answer, log each line, and forget it once it has ended."""
    told = False
    try:
        assert process.stdout is not None
        for text in process.stdout:
            try:
                answer = json.loads(text)
            except ValueError:
                log.info("jupyter-burst pre-warm: %s", text.rstrip())
                continue
            if not isinstance(answer, dict):
                continue
            log.info("jupyter-burst pre-warm %s: %s", answer.get("state"), answer.get("message"))
            with _lock:
                _latest[key] = answer
            if not told:
                answers.put(answer)
                told = True
        process.wait()
    finally:
        if not told:
            answers.put(None)
        with _lock:
            if _running.get(key) is process:
                del _running[key]
                _latest.pop(key, None)
