"""``get_ipython()`` on a rank: the IPython a burst cell's syntax needs, on the rank's machine.

Runs inside a Dask worker process. The kernel transformed the cell as IPython does
(:mod:`jupyter_burst.kernel.ipython_syntax`): ``!cmd`` became ``get_ipython().system("cmd")``,
``%time f()`` ``get_ipython().run_line_magic("time", "f()")``. This object answers those
calls the way the notebook's shell would, with IPython's own code where it can (shell
escapes through a pseudo-terminal, streamed as they print; ``x = !cmd`` an ``SList``;
``%time``/``%timeit`` IPython's ``ExecutionMagics``), so that the cell's output and results
read the same as in the notebook:

* ``!cmd``, ``x = !cmd``: run on the rank's machine, in the cell's working folder.
* ``%time``, ``%timeit``, ``%%time``, ``%%timeit``, ``%env``/``%set_env``, ``%pwd``.
* ``%%writefile FILE`` (IPython's own), ``%%bash`` and ``%%sh`` (the body as a script).
* ``%cd DIR``: within the cell's working folder, for the rest of the cell.
* ``%matplotlib inline``: figures come back as images anyway.
* ``%pip install``/``uninstall``: already done on every node by the kernel before the cell
  ran (:mod:`jupyter_burst.worker.node_packages`); other ``%pip`` verbs run on this node.
"""

from __future__ import annotations

import os
import sys
import types
from typing import Any

from jupyter_burst.errors import BurstError
from jupyter_burst.worker.node_packages import EVERY_NODE, pip_verb


class RankShell:
    """One cell's ``get_ipython()`` on one rank."""

    def __init__(self, module: types.ModuleType, workdir: str | None):
        self.user_module = module
        self.user_ns = module.__dict__
        self.user_global_ns = module.__dict__
        self.workdir = os.path.realpath(workdir or os.getcwd())
        self._compiler = None
        self.ast_transformers: list = []
        self.configurables: list = []
        self.system_raise_on_error = False
        self._magics: dict[str, Any] = {}

    # ---- what transformed cells call ------------------------------------------------------

    def system(self, cmd: str) -> None:
        """``!cmd``: the command's output streams into the cell as it prints."""
        from IPython.utils.process import system

        if cmd.rstrip().endswith("&"):
            raise OSError("Background processes not supported.")
        self.user_ns["_exit_code"] = system(self.var_expand(cmd, depth=1))

    system_piped = system

    def getoutput(self, cmd: str, split: bool = True, depth: int = 0):
        """``x = !cmd``: the output as IPython's ``SList`` (or ``LSString``)."""
        from IPython.utils.process import getoutput
        from IPython.utils.text import LSString, SList

        if cmd.rstrip().endswith("&"):
            raise OSError("Background processes not supported.")
        out = getoutput(self.var_expand(cmd, depth=depth + 1))
        return SList(out.splitlines()) if split else LSString(out)

    def run_line_magic(self, magic_name: str, line: str, _stack_depth: int = 1) -> Any:
        frame = sys._getframe(_stack_depth)
        local_ns = frame.f_locals if frame.f_locals is not self.user_ns else None
        if magic_name == "time":
            return self._execution().time(line, None, local_ns)
        if magic_name == "timeit":
            return self._execution().timeit(line, None, local_ns)
        line = self.var_expand(line, depth=_stack_depth)
        if magic_name in ("env", "set_env"):
            return getattr(self._os_magics(), magic_name)(line)
        if magic_name == "pwd":
            return os.getcwd()
        if magic_name == "cd":
            return self._cd(line)
        if magic_name == "matplotlib":
            if line.strip() not in ("", "inline"):
                raise BurstError(f"%matplotlib {line.strip()} does not run on a rank (no screen)")
            return None
        if magic_name == "pip":
            return self._pip(line)
        raise BurstError(
            f"%{magic_name} does not run in a %%burst cell; run it in a cell without %%burst"
        )

    def run_cell_magic(self, magic_name: str, line: str, cell: str) -> Any:
        if magic_name == "time":
            return self._execution().time(line, cell)
        if magic_name == "timeit":
            return self._execution().timeit(line, cell)
        if magic_name == "writefile":
            return self._os_magics().writefile(self.var_expand(line, depth=1), cell)
        if magic_name in ("bash", "sh"):
            return _script(magic_name, cell)
        raise BurstError(
            f"%%{magic_name} does not run in a %%burst cell; run it in a cell without %%burst"
        )

    # ---- what IPython's magics ask of their shell ------------------------------------------

    @property
    def compile(self):
        if self._compiler is None:  # made on first use: most cells use no magic
            from IPython.core.compilerop import CachingCompiler

            self._compiler = CachingCompiler()
        return self._compiler

    def transform_cell(self, raw_cell: str) -> str:
        from IPython.core.inputtransformer2 import TransformerManager

        return TransformerManager().transform_cell(raw_cell)

    def transform_ast(self, node):
        return node

    def var_expand(self, cmd: str, depth: int = 0) -> str:
        """``$name`` and ``{expression}`` in a command, as IPython expands them."""
        from IPython.utils.text import DollarFormatter

        ns = dict(self.user_ns)
        try:
            frame = sys._getframe(depth + 1)
        except ValueError:
            pass
        else:
            ns.update(frame.f_locals)
        try:
            return DollarFormatter().vformat(cmd, args=[], kwargs=ns)
        except Exception:
            return cmd

    def ev(self, expr: str) -> Any:
        return eval(expr, self.user_ns)

    def ex(self, cmd: str) -> None:
        exec(cmd, self.user_ns)

    # ---- the magics ---------------------------------------------------------------------

    def _execution(self):
        magics = self._magics.get("execution")
        if magics is None:
            from IPython.core.magics.execution import ExecutionMagics

            magics = self._magics["execution"] = ExecutionMagics(shell=self)
        return magics

    def _os_magics(self):
        magics = self._magics.get("os")
        if magics is None:
            from IPython.core.magics.osm import OSMagics

            magics = self._magics["os"] = OSMagics(shell=self)
        return magics

    def _cd(self, line: str) -> None:
        target = line.strip().strip("'\"")
        if target in ("", "~"):
            target = self.workdir
        path = os.path.realpath(os.path.join(os.getcwd(), os.path.expanduser(target)))
        if path != self.workdir and not path.startswith(self.workdir + os.sep):
            raise BurstError(
                f"%cd {line.strip()} leaves the cell's working folder ({self.workdir}); a burst "
                "cell's paths stay inside it: use a path below it"
            )
        if not os.path.isdir(path):
            raise BurstError(f"%cd {line.strip()}: no such folder on this node ({path})")
        os.chdir(path)
        print(path)

    def _pip(self, line: str) -> None:
        if pip_verb(line) in EVERY_NODE:
            return None  # done on every node before the cell ran
        import shlex

        self.system(f"{shlex.quote(sys.executable)} -m pip {line}")
        return None


def _script(shell: str, script: str) -> None:
    """``%%bash``/``%%sh``: the cell body as a script; its output streams as it prints."""
    import shutil
    import subprocess
    import threading

    program = shutil.which(shell) or "/bin/sh"
    process = subprocess.Popen(
        [program],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )

    def copy(source, name: str) -> None:
        for line in source:
            getattr(sys, name).write(line)

    readers = [
        threading.Thread(target=copy, args=(process.stdout, "stdout"), daemon=True),
        threading.Thread(target=copy, args=(process.stderr, "stderr"), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        process.stdin.write(script)
        process.stdin.close()
        process.wait()
    except KeyboardInterrupt:
        process.terminate()
        raise
    finally:
        for reader in readers:
            reader.join(5)


def _register_as_shell() -> None:
    # IPython's magics hold their shell in a trait that accepts only registered shells.
    from IPython.core.interactiveshell import InteractiveShellABC

    InteractiveShellABC.register(RankShell)


_register_as_shell()
