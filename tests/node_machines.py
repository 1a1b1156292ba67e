"""Node processes as machines: ``python -m jupyter_burst.node`` as a cloud machine runs it.

Its power-off command writes a file, so a test sees when the machine would have switched
itself off. ``netns`` runs it inside a network namespace the test made (tests/netns.py).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from tests.harness import REPO
from tests.netns import inside


class Machine:
    """One node process, as a machine: it is 'off' once its power-off command has run."""

    def __init__(
        self,
        folder: pathlib.Path,
        name: str,
        *args: str,
        env: dict[str, str] | None = None,
        netns: str | None = None,
    ):
        self.off_file = folder / f"{name}.off"
        state = folder / f"{name}-state"
        state.mkdir()
        command = [sys.executable, "-c", f"open({str(self.off_file)!r}, 'w').write('off')"]
        env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
        self.log_path = folder / f"{name}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                *(inside(netns) if netns else []),
                sys.executable,
                "-m",
                "jupyter_burst.node",
                "--cluster",
                "remote",
                "--provider",
                "aws",
                "--state-dir",
                str(state),
                "--power-off",
                subprocess.list2cmdline(command),
                *args,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    @property
    def off(self) -> bool:
        return self.off_file.exists()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self.log.close()


@pytest.fixture
def machines():
    started: list[Machine] = []
    yield started
    for machine in started:
        machine.stop()
