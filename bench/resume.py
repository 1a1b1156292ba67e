"""Resume: SIGKILL the worker running a training cell; time until training runs again.

The cell trains a small MLP (torch, CPU) with Adam, checkpoints model and optimizer every
few steps with ``burst.checkpoint`` and prints a progress line per step. Once it has saved
twice, the worker process that runs it is SIGKILLed. The cell is run again by itself (a
lost worker is retried), ``burst.restore()`` gives it the newest checkpoint, and it carries
on. The figure is the time from the kill to the first progress line after the restore, as
the notebook receives it: loss noticed, a new worker process, the cell re-sent, torch
imported again, the checkpoint read and loaded, one training step.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time

from bench.common import BenchError, Report, Row, Session, median

TARGET_SECONDS = 15.0
STEPS, EVERY, KILL_AFTER = 40, 10, 21  # steps in all; checkpoint period; kill at this step

# 6.3 M parameters: a 72 MiB checkpoint with Adam's two moments.
CELL = f"""%%burst
import os, time
print('started', os.getpid(), flush=True)
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Linear(512, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 2048), torch.nn.ReLU(),
    torch.nn.Linear(2048, 512),
)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
start, state = 0, burst.restore()
if state is not None:
    model.load_state_dict(state['model'])
    optimizer.load_state_dict(state['optimizer'])
    start = state['step'] + 1
    print('restored', state['step'], flush=True)
x, y = torch.randn(32, 512), torch.randn(32, 512)
for step in range(start, {STEPS}):
    optimizer.zero_grad()
    loss = (model(x) - y).pow(2).mean()
    loss.backward()
    optimizer.step()
    if step % {EVERY} == {EVERY} - 1:
        burst.checkpoint(
            {{'model': model.state_dict(), 'optimizer': optimizer.state_dict(), 'step': step}},
            step=step,
        )
    print('progress', step, f'{{loss.item():.4f}}', flush=True)
last_step = step
"""

_PROGRESS = re.compile(r"^progress (\d+) ")


class _Lines:
    """Stands in for sys.stdout/sys.stderr during the cell: every line with its arrival time."""

    def __init__(self, name: str, log: list, lock: threading.Lock, changed: threading.Condition):
        self.name, self.log, self.lock, self.changed = name, log, lock, changed
        self.partial = ""

    def write(self, text: str) -> int:
        now = time.monotonic()
        with self.changed:
            self.partial += text
            *lines, self.partial = self.partial.split("\n")
            self.log.extend((now, self.name, line) for line in lines)
            self.changed.notify_all()
        return len(text)

    encoding = "utf-8"

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def one_run(session: Session) -> dict[str, float]:
    """Run the training cell once, kill its worker mid-way; the moments that matter."""
    log: list[tuple[float, str, str]] = []
    lock = threading.Lock()
    changed = threading.Condition(lock)
    killed: dict[str, float] = {}

    def killer() -> None:
        deadline = time.monotonic() + 120
        with changed:
            while time.monotonic() < deadline:
                pid = next((int(t.split()[1]) for _, _, t in log if t.startswith("started")), None)
                steps = [int(m.group(1)) for _, _, t in log if (m := _PROGRESS.match(t))]
                if pid is not None and steps and steps[-1] >= KILL_AFTER:
                    killed["at"] = time.monotonic()
                    killed["step"] = steps[-1]
                    os.kill(pid, signal.SIGKILL)
                    return
                changed.wait(0.5)

    thread = threading.Thread(target=killer, name="burst-bench-killer", daemon=True)
    streams = sys.stdout, sys.stderr
    sys.stdout = _Lines("stdout", log, lock, changed)
    sys.stderr = _Lines("stderr", log, lock, changed)
    thread.start()
    try:
        session.cell(CELL)
    finally:
        sys.stdout, sys.stderr = streams
        thread.join(10)
    if "at" not in killed:
        raise BenchError(f"the training cell ended before it was killed: {log[-5:]}")
    return moments(log, killed)


def moments(log: list[tuple[float, str, str]], killed: dict[str, float]) -> dict[str, float]:
    after = [(t, stream, text) for t, stream, text in log if t >= killed["at"]]

    def first(predicate) -> float | None:
        return next((t for t, _, text in after if predicate(text)), None)

    restored_line = next((text for _, _, text in after if text.startswith("restored")), None)
    if restored_line is None:
        raise BenchError(f"the cell did not restore after the kill: {[x[2] for x in after][:10]}")
    restored = int(restored_line.split()[1])
    if not killed["step"] - EVERY <= restored <= killed["step"] or restored % EVERY != EVERY - 1:
        raise BenchError(f"killed at step {killed['step']}, but resumed from step {restored}")
    resumed = first(lambda text: text.startswith(f"progress {restored + 1} "))
    done = first(lambda text: text.startswith(f"progress {STEPS - 1} "))
    if resumed is None or done is None:
        raise BenchError("training did not go on to its last step after the restore")
    at = killed["at"]
    noticed = first(lambda text: "running the cell again" in text or "attempt 2" in text)
    started = first(lambda text: text.startswith("started"))
    restore_done = first(lambda text: text.startswith("restored"))
    return {
        "resumed": resumed - at,
        "noticed": (noticed - at) if noticed is not None else float("nan"),
        "started": started - at,
        "restored": restore_done - at,
        "lost_steps": killed["step"] - restored,
    }


def run(session: Session, quick: bool, profile: bool = False) -> Report:
    reps = 3 if quick else 5
    session.ensure_cluster()
    session.cell("%%burst\nimport torch\n")  # the first worker has torch, like a notebook's would
    runs = []
    for _ in range(reps):
        runs.append(one_run(session))
        if session.user_ns.get("last_step") != STEPS - 1:
            raise BenchError(f"the cell ended at step {session.user_ns.get('last_step')}")
        session.ensure_cluster()  # notes the restarted worker for the final leak check
    resumed = [r["resumed"] for r in runs]
    value = median(resumed)
    report = Report()
    m = "resume"
    report.rows += [
        Row(
            m,
            f"SIGKILL of the worker mid-training to the next progress line after "
            f"`burst.restore()` (72 MiB model+Adam checkpoint), median of {reps}",
            f"{value:.2f} s",
            f"<= {TARGET_SECONDS:g} s",
            value <= TARGET_SECONDS,
        ),
        Row(m, "  all runs", " / ".join(f"{t:.2f}" for t in resumed) + " s"),
        Row(
            m,
            "  of which (medians, from the kill): loss noticed / cell started again / "
            "checkpoint restored / first step done",
            " / ".join(
                f"{median([r[k] for r in runs]):.2f}"
                for k in ("noticed", "started", "restored", "resumed")
            )
            + " s",
        ),
    ]
    return report
