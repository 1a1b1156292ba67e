"""Which files of the notebook's folder stay behind: ``.gitignore`` and ``.burstignore`` rules.

The working folder travels to remote nodes (``burst.workdir``) without what git would leave
out of a commit, nor what a ``.burstignore`` names (the same syntax, for what git keeps but
a node needs not: a big data set read from S3 there, say). Both the kernel (choosing what
to send) and the node (choosing what may come back, and what it keeps as its own scratch)
apply the same rules, so they are plain data (:class:`RuleFile`) that cross in the cell's
spec and one matcher built from them.

The syntax is git's "gitwildmatch": ``#`` comments, ``!`` re-includes, a trailing ``/``
matches folders only, a pattern with a ``/`` before its end is anchored to its file's
folder, ``*``/``?``/``[...]`` stay within one path part and ``**`` crosses parts. As in git,
a file inside a folder that is left out cannot be re-included (the walk never enters it),
and a later rule wins over an earlier one, a deeper file's over a shallower one's.
Written here rather than taken from ``pathspec``: a hundred lines, and no new dependency on
every node.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

# Never sent, whatever the rules say: git's own folder, Jupyter's autosaves, bytecode.
ALWAYS_SKIPPED = frozenset({".git", ".hg", ".svn", ".ipynb_checkpoints", "__pycache__"})
# A folder holding one of these is a Python environment (venv, virtualenv, conda): the node
# has its own, built for its platform.
ENVIRONMENT_MARKERS = ("pyvenv.cfg", "conda-meta")
RULE_FILES = (".gitignore", ".burstignore")


@dataclass(frozen=True)
class RuleFile:
    """The lines of one ignore file, and where it applies.

    ``base``: the folder it sits in, relative to the notebook's folder ("" for the folder
    itself, "data/" for data/.gitignore); it applies to paths below it. ``prefix``: for a
    ``.gitignore`` above the notebook's folder (in the same git repository), the notebook
    folder's path relative to it ("notebooks/"), so that its anchored patterns read as git
    reads them.
    """

    base: str
    prefix: str
    lines: tuple[str, ...]


# Files shaped like secrets stay on the notebook's machine, as secret values do
# (credentials.py): rules read before the folder's own, so a `!.env` in .burstignore
# sends one on purpose.
SECRET_FILES = RuleFile(
    "", "", (".env", ".env.*", ".netrc", ".git-credentials", ".aws/", ".ssh/", "*.pem", "*.key")
)


@dataclass(frozen=True)
class _Pattern:
    regex: re.Pattern[str]
    negated: bool
    folders_only: bool


@dataclass
class IgnoreRules:
    """Every rule that applies to a folder's files, in the order they take effect."""

    files: list[RuleFile] = field(default_factory=list)
    _compiled: list[tuple[RuleFile, list[_Pattern]]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._compiled = [(f, _compile_lines(f.lines)) for f in self.files]

    def add(self, rule_file: RuleFile) -> None:
        self.files.append(rule_file)
        self._compiled.append((rule_file, _compile_lines(rule_file.lines)))

    def ignored(self, path: str, is_dir: bool) -> bool:
        """Whether ``path`` (relative, ``/``-separated) is left out by the rules."""
        verdict = False
        for rule_file, patterns in self._compiled:
            if not path.startswith(rule_file.base):
                continue
            relative = rule_file.prefix + path[len(rule_file.base) :]
            for pattern in patterns:
                if pattern.folders_only and not is_dir:
                    continue
                if pattern.regex.fullmatch(relative):
                    verdict = not pattern.negated
        return verdict


def always_skipped(folder: str, name: str) -> bool:
    """A folder that never travels: version control, checkpoints, bytecode, an environment."""
    if name in ALWAYS_SKIPPED:
        return True
    return any(os.path.exists(os.path.join(folder, name, m)) for m in ENVIRONMENT_MARKERS)


def rules_above(root: str) -> list[RuleFile]:
    """The ``.gitignore`` files between the notebook's folder and its git repository's root.

    Outside a git repository there are none: a ``.gitignore`` in some folder above is not
    the notebook's business.
    """
    found: list[RuleFile] = []
    here = os.path.realpath(root)
    parts: list[str] = []
    while True:
        parent = os.path.dirname(here)
        if parent == here:
            return []  # reached / without finding the repository
        if os.path.exists(os.path.join(here, ".git")):
            return found
        parts.insert(0, os.path.basename(here))
        here = parent
        lines = read_rule_file(os.path.join(here, ".gitignore"))
        if lines:
            found.insert(0, RuleFile("", "/".join(parts) + "/", lines))


def read_rule_file(path: str) -> tuple[str, ...]:
    """The lines of an ignore file; none when it is absent or unreadable."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return tuple(f.read().splitlines())
    except OSError:
        return ()


def _compile_lines(lines: tuple[str, ...]) -> list[_Pattern]:
    patterns = []
    for line in lines:
        pattern = _compile(line)
        if pattern is not None:
            patterns.append(pattern)
    return patterns


def _compile(line: str) -> _Pattern | None:
    """One gitignore line as a regular expression over a relative path; None for no rule."""
    text = _strip_trailing_spaces(line)
    if not text or text.startswith("#"):
        return None
    negated = text.startswith("!")
    if negated:
        text = text[1:]
    elif text.startswith(("\\!", "\\#")):
        text = text[1:]
    folders_only = text.endswith("/")
    text = text.rstrip("/")
    if not text:
        return None
    anchored = "/" in text
    text = text.lstrip("/")
    body = _translate(text)
    regex = body if anchored else f"(?:.*/)?{body}"
    try:
        return _Pattern(re.compile(regex, re.DOTALL), negated, folders_only)
    except re.error:
        return None  # git ignores a pattern it cannot read; so do we


def _strip_trailing_spaces(line: str) -> str:
    """Trailing spaces go unless escaped with a backslash (git's rule)."""
    stripped = line.rstrip(" ")
    if stripped.endswith("\\") and len(stripped) < len(line):
        return stripped[:-1] + " "
    return stripped


def _translate(pattern: str) -> str:
    """A gitwildmatch pattern (no leading or trailing ``/``) as a regular expression."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i) and (i == 0 or pattern[i - 1] == "/"):
                after = i + 2
                if after == n:  # "dir/**": everything inside
                    out.append(".*")
                    i = after
                    continue
                if pattern[after] == "/":  # "**/x", "a/**/x": any number of folders
                    out.append("(?:.*/)?")
                    i = after + 1
                    continue
            while i < n and pattern[i] == "*":
                i += 1
            out.append("[^/]*")
            continue
        if c == "?":
            out.append("[^/]")
        elif c == "[":
            end, cls = _char_class(pattern, i)
            if cls is None:
                out.append(re.escape(c))
            else:
                out.append(cls)
                i = end
                continue
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _char_class(pattern: str, start: int) -> tuple[int, str | None]:
    """``[...]`` at ``start``: the index after it and its regex; None if it never closes."""
    i = start + 1
    negate = i < len(pattern) and pattern[i] in "!^"
    if negate:
        i += 1
    members: list[str] = []
    first = True
    while i < len(pattern):
        c = pattern[i]
        if c == "]" and not first:
            body = "".join(members)
            return i + 1, f"[{'^/' if negate else ''}{body}]" if body else None
        if c == "\\" and i + 1 < len(pattern):
            i += 1
            members.append(re.escape(pattern[i]))
        elif c == "-" and members and i + 1 < len(pattern) and pattern[i + 1] != "]":
            members.append("-")
        else:
            members.append(re.escape(c) if c not in "-" else "\\-")
        first = False
        i += 1
    return start + 1, None
