"""The kernel's environment as a spec: every distribution its interpreter has, as the nodes need it.

Read from the kernel's own interpreter (``importlib.metadata``), so that what a cell can
import here it can import on a node. Three kinds of distribution:

- from a package index: pinned ``name==version`` (torch without its local build tag: the
  CPU build here is the same version's CUDA build on a GPU node);
- installed from a folder or a local file (editable or not): built into a wheel here and
  shipped, since no index has it (:mod:`.wheels`);
- from a VCS or a URL: the same reference, at the commit that is installed.

Left out, each with one line: what exists only for the notebook's front end (JupyterLab
and its server: a node never serves a notebook), what only another platform needs (a
package every installed requirer asks for only on macOS or Windows, such as ``appnope``),
and what ``burst.env.exclude`` names. What pickles need on both sides is never left out.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement

from jupyter_burst import config
from jupyter_burst.errors import ClusterError

# The notebook's front end: a node runs cells, never JupyterLab or its server.
FRONT_END = frozenset(
    {
        "jupyter",
        "jupyterlab",
        "jupyter-server",
        "jupyterlab-server",
        "jupyter-lsp",
        "notebook",
        "notebook-shim",
        "jupyter-server-terminals",
        "jupyter-builder",
        "nbclassic",
        "voila",
    }
)
# Distributions that exist for one other platform only, when a user installed them directly.
OTHER_PLATFORM_ONLY = re.compile(
    r"^(appnope|pyobjc(-.*)?|pywin32(-ctypes)?|pywinpty|wmi|comtypes)$"
)
# What a value crossing between kernel and node is pickled with: the same versions on both
# sides or a pickle does not load (or, worse, loads wrongly).
PICKLE_CRITICAL = ("jupyter-burst", "cloudpickle", "dask", "distributed", "torch", "numpy")
# torch's family ships local build tags (+cpu, +cu121): the public version is what a node asks.
_BUILD_TAGGED = frozenset({"torch", "torchvision", "torchaudio"})
# jupyter-burst's extras that a node uses: checkpoints in S3, torch, the head's dashboard.
_OUR_NODE_EXTRAS = frozenset({"dashboard", "s3", "torch"})
# Installers that are not packages a node needs from the spec (uv makes the venv itself; pip
# stays: %pip in a cell runs it on the nodes).
_INSTALLERS = frozenset({"uv"})


@dataclass(frozen=True)
class LocalDist:
    """A distribution no index has: built here into a wheel and shipped to the nodes."""

    name: str
    version: str
    source: str  # a folder (a project) or a file (a wheel or a source archive)
    editable: bool = False


@dataclass(frozen=True)
class EnvSpec:
    """The kernel's environment as the nodes will have it."""

    python: str  # "3.11": the nodes get a Python of the same minor version
    requirements: tuple[str, ...]  # from an index (name==version) or a VCS/URL reference
    local: tuple[LocalDist, ...] = ()
    left_out: tuple[str, ...] = ()  # one line each: what the nodes will not have, and why
    differences: tuple[str, ...] = ()  # one line each: what the nodes will have differently
    packages: dict[str, str] = field(default_factory=dict)  # every shipped name -> version

    def describe(self) -> str:
        local = f"; {len(self.local)} built here" if self.local else ""
        return f"Python {self.python}, {len(self.packages)} packages{local}"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def public_version(name: str, version: str) -> str:
    """The version a node asks an index for: torch's build tag (``+cpu``) dropped."""
    return version.split("+", 1)[0] if canonical(name) in _BUILD_TAGGED else version


def read_spec(
    paths: list[str] | None = None, exclude: Iterable[str] | None = None, gpu: bool = True
) -> EnvSpec:
    """The spec of this interpreter's environment (``paths``: where to look; sys.path)."""
    python = config.get("env.python", None)
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if sys.implementation.name != "cpython":
        raise ClusterError(
            f"this kernel runs {sys.implementation.name}, and cloud nodes run CPython: values "
            "pickled here would not load there; start the notebook on CPython"
        )
    if python and str(python) != here:
        raise ClusterError(
            f"burst.env.python is {python} but this kernel runs Python {here}: values pickled "
            f"here need the same minor version on the nodes; remove burst.env.python or start "
            f"the notebook on Python {python}"
        )
    excluded = {canonical(n) for n in (config.get("env.exclude", None) or [])}
    excluded |= {canonical(n) for n in (exclude or [])}
    critical = sorted(excluded & {canonical(n) for n in PICKLE_CRITICAL})
    if critical:
        raise ClusterError(
            f"burst.env.exclude leaves out {', '.join(critical)}, which values pickled here need "
            "at the same version on the nodes; remove it from burst.env.exclude"
        )
    found = _distributions(paths)
    elsewhere = _other_platform_only(found)
    keep = _wanted(found, excluded | set(elsewhere))
    requirements: list[str] = []
    local: list[LocalDist] = []
    left_out: list[str] = []
    differences: list[str] = []
    packages: dict[str, str] = {}
    notebook_side: list[str] = []
    for name, dist in sorted(found.items()):
        version = dist.version
        if name in _INSTALLERS:
            continue
        if name in excluded:
            left_out.append(f"{name} {version}: left out (burst.env.exclude)")
            continue
        if name in elsewhere:
            left_out.append(f"{name} {version}: left out ({elsewhere[name]})")
            continue
        if name not in keep:
            notebook_side.append(name)
            continue
        packages[name] = version
        origin = _origin(dist)
        if origin is None:
            pinned = public_version(name, version)
            requirements.append(f"{name}=={pinned}")
            if pinned != version and name == "torch":
                build = version.split("+", 1)[1]
                there = "the CUDA build" if gpu else "the same version from the index"
                differences.append(f"torch {pinned}: the {build} build here, {there} on the nodes")
        elif isinstance(origin, LocalDist):
            local.append(origin)
        else:
            requirements.append(origin)
    if notebook_side:
        shown = ", ".join(notebook_side[:6]) + (", ..." if len(notebook_side) > 6 else "")
        left_out.append(
            f"{len(notebook_side)} distributions left out that only the notebook's side or "
            f"another package's unused extras need ({shown}); burst.env.include keeps one"
        )
    return EnvSpec(
        python=here,
        requirements=tuple(requirements),
        local=tuple(local),
        left_out=tuple(left_out),
        differences=tuple(differences),
        packages=packages,
    )


def _distributions(paths: list[str] | None) -> dict[str, importlib.metadata.Distribution]:
    """Installed distributions by canonical name; the first on the path wins, as an import would."""
    found: dict[str, importlib.metadata.Distribution] = {}
    search = paths if paths is not None else sys.path
    for dist in importlib.metadata.distributions(path=search):
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonical(name), dist)
    return found


def _origin(dist: importlib.metadata.Distribution) -> LocalDist | str | None:
    """None: from an index. A LocalDist: from a folder or file here. A string: a VCS/URL
    reference the nodes can use as it is."""
    try:
        raw = dist.read_text("direct_url.json")
    except OSError:
        raw = None
    if not raw:
        return None
    try:
        direct = json.loads(raw)
    except ValueError:
        return None
    url = str(direct.get("url", ""))
    name = canonical(dist.metadata["Name"])
    if "vcs_info" in direct:
        vcs = direct["vcs_info"]
        return f"{name} @ {vcs.get('vcs', 'git')}+{url}@{vcs.get('commit_id', '')}"
    if url.startswith("file:"):
        path = urllib.request.url2pathname(urllib.parse.urlparse(url).path)
        editable = bool(direct.get("dir_info", {}).get("editable"))
        return LocalDist(name, dist.version, path, editable)
    return f"{name} @ {url}"


def _linux_environment() -> dict[str, str]:
    """The marker environment of a Linux node running this kernel's Python."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return {
        "os_name": "posix",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "platform_release": "",
        "platform_version": "",
        "python_version": version,
        "python_full_version": ".".join(map(str, sys.version_info[:3])),
        "implementation_name": "cpython",
        "implementation_version": ".".join(map(str, sys.version_info[:3])),
        "platform_python_implementation": "CPython",
    }


_EXTRA = re.compile(r"""extra\s*==\s*['"]([^'"]+)['"]""")


def _applies(marker: Marker | None, environment: dict[str, str]) -> bool:
    """Whether a requirement with ``marker`` is asked for there (under any of its extras)."""
    if marker is None:
        return True
    extras = _EXTRA.findall(str(marker)) or [""]
    return any(marker.evaluate({**environment, "extra": e}) for e in extras)


def _requirements(dist: importlib.metadata.Distribution) -> Iterator[Requirement]:
    """The distribution's requirements that parse (a malformed line is skipped, as pip does)."""
    for line in dist.requires or []:
        try:
            yield Requirement(line)
        except InvalidRequirement:
            continue


def _edges(
    found: dict[str, importlib.metadata.Distribution], environment: dict[str, str]
) -> dict[str, list[tuple[str, bool, str]]]:
    """requirer -> [(required, asked there, whether only under an extra)] among installed ones."""
    edges: dict[str, list[tuple[str, bool, str]]] = {}
    for name, dist in found.items():
        for wanted in _requirements(dist):
            target = canonical(wanted.name)
            if target in found:
                extra = " ".join(_EXTRA.findall(str(wanted.marker or "")))
                edges.setdefault(name, []).append(
                    (target, _applies(wanted.marker, environment), extra)
                )
    return edges


def _other_platform_only(found: dict[str, importlib.metadata.Distribution]) -> dict[str, str]:
    """The distributions a Linux node does not need, with why: every installed requirer asks
    for them only on another platform (or the user installed one that exists for one only)."""
    asked: dict[str, list[tuple[str, bool]]] = {}
    for requirer, targets in _edges(found, _linux_environment()).items():
        for target, on_linux, _ in targets:
            asked.setdefault(target, []).append((requirer, on_linux))
    out: dict[str, str] = {}
    for name in found:
        askers = asked.get(name)
        if not askers:
            if OTHER_PLATFORM_ONLY.match(name):
                out[name] = "it exists for macOS or Windows only"
            continue
        if not any(on_linux for _, on_linux in askers):
            out[name] = f"only needed off Linux: {askers[0][0]} asks for it elsewhere only"
    return out


def _wanted(found: dict[str, importlib.metadata.Distribution], gone: set[str]) -> set[str]:
    """What the nodes get: what the user installed and what it needs on Linux.

    The roots are the distributions no installed one requires (itself or through an extra
    that is installed in full), those pip
    says were asked for by name, ``burst.env.include``, and what pickles need. From them,
    every requirement that applies on Linux is followed, an installed extra's too
    (``dask[dataframe]`` brings pandas), never into the front end. Of jupyter-burst's own
    extras only those a node uses are followed (s3 checkpoints, torch); what the others
    name (the notebook's side: JupyterLab, the kernel, the AWS client, the test tools) is
    not a root either: it was installed for the notebook.
    """
    edges = _edges(found, _linux_environment())
    installed_extras = _installed_extras(found)
    # Required by an installed package itself, or by one of its extras that is installed: a
    # test extra whose tools are mostly absent does not make its pytest "a dependency".
    required = {
        target
        for name, targets in edges.items()
        for target, _, extra in targets
        if not extra or (name, extra) in installed_extras or name == "jupyter-burst"
    }
    include = {canonical(n) for n in (config.get("env.include", None) or [])}
    roots = {n for n in found if n not in required or _asked_by_name(found[n])}
    roots |= include & set(found)
    roots |= {canonical(n) for n in PICKLE_CRITICAL} & set(found)
    blocked = FRONT_END | gone
    keep: set[str] = set()
    todo = [n for n in roots if n not in blocked]
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        for target, on_linux, extra in edges.get(name, []):
            if not on_linux or target in blocked or target in keep:
                continue
            if name == "jupyter-burst" and extra:
                if extra not in _OUR_NODE_EXTRAS:
                    continue
            elif extra and (name, extra) not in installed_extras:
                continue
            todo.append(target)
    return keep


def _installed_extras(found: dict[str, importlib.metadata.Distribution]) -> set[tuple[str, str]]:
    """(distribution, extra) pairs whose every requirement is installed: an extra someone
    installed (``dask[dataframe]``), unlike a test or docs extra whose tools are absent."""
    environment = _linux_environment()
    wanted: dict[tuple[str, str], bool] = {}
    for name, dist in found.items():
        for requirement in _requirements(dist):
            for extra in _EXTRA.findall(str(requirement.marker or "")):
                if requirement.marker is not None and not requirement.marker.evaluate(
                    {**environment, "extra": extra}
                ):
                    continue
                present = canonical(requirement.name) in found
                wanted[(name, extra)] = wanted.get((name, extra), True) and present
    return {pair for pair, complete in wanted.items() if complete}


def _asked_by_name(dist: importlib.metadata.Distribution) -> bool:
    """pip's REQUESTED: installed by name, not as a dependency (uv writes it for every one)."""
    try:
        installer = (dist.read_text("INSTALLER") or "").strip()
        return installer == "pip" and dist.read_text("REQUESTED") is not None
    except OSError:
        return False
