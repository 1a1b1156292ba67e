"""Tab completion for ``%%burst`` options and ``%burst`` verbs, through IPython's completer.

``%%burst g<Tab>`` gives ``gpus=``; ``provider=<Tab>`` the known providers; ``cluster=<Tab>``
the clusters running and recently used; ``%burst <Tab>`` the verbs, and after a verb the job,
cluster or checkpoint names it takes. Completion reads only local files (the state folder's
records and ledger): it never contacts a cluster or a cloud, and never raises.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from IPython.core.completer import (
    CompletionContext,
    SimpleCompletion,
    SimpleMatcherResult,
    context_matcher,
)

from jupyter_burst import config
from jupyter_burst.clusters import records
from jupyter_burst.clusters.registry import known_providers
from jupyter_burst.kernel import options
from jupyter_burst.kernel.verb_help import VERBS
from jupyter_burst.store.ledger import shared_ledger

_RECENT = 50  # names offered from the ledger: the newest first, at most this many

_CELL_LINE = re.compile(r"^\s*%%burst\b(?P<rest>.*)$")
_VERB_LINE = re.compile(r"^\s*%burst\b(?P<rest>.*)$")
_YES_NO = ["yes", "no"]


def option_words() -> list[str]:
    """What may follow ``%%burst``: each option with its ``=``; a flag also bare."""
    words = [f"{key}=" for key in options.option_keys()]
    return words + sorted(options.flag_keys())


def _cluster_names() -> list[str]:
    state_dir = config.state_dir()
    live = [str(config.get("cluster", "default"))]
    live += [r.get("name", "") for r in records.all_records(state_dir)]
    used = shared_ledger(state_dir).query(
        "SELECT name FROM clusters GROUP BY name ORDER BY max(started) DESC LIMIT ?", (_RECENT,)
    )
    return _unique(live + [row["name"] for row in used])


def _background_job_names() -> list[str]:
    rows = shared_ledger(config.state_dir()).query(
        "SELECT options FROM jobs WHERE options LIKE '%\"background\": true%' "
        "ORDER BY started DESC LIMIT ?",
        (_RECENT,),
    )
    names = []
    for row in rows:
        try:
            name = json.loads(row["options"]).get("name")
        except (ValueError, AttributeError):
            continue
        if isinstance(name, str):
            names.append(name)
    return _unique(names)


def _job_ids() -> list[str]:
    rows = shared_ledger(config.state_dir()).recent_jobs(_RECENT)
    return ["last", *(row["id"] for row in rows)]


_VALUES: dict[str, Callable[[], list[str]]] = {
    "provider": lambda: sorted(known_providers()),
    "cluster": _cluster_names,
    "spot": lambda: [*_YES_NO, "any"],
    "async": lambda: _YES_NO,
    "gpus": lambda: ["1", "2", "4", "8", "auto"],
}

# What each verb's next word names.
_VERB_ARGUMENTS: dict[str, Callable[[], list[str]]] = {
    "down": lambda: [*_cluster_names(), "provider="],
    "cache": lambda: ["clear", *_cluster_names()],
    "logs": _background_job_names,
    "wait": _background_job_names,
    "cancel": _background_job_names,
    "attach": _background_job_names,
    "checkpoints": _job_ids,
    "restore": _job_ids,
    "prewarm": lambda: ["on", "off"],
    "help": lambda: list(VERBS),
    "offers": lambda: ["gpus=", "gpu_mem=", "spot=", "region="],
}


def candidates(line_before_cursor: str) -> list[str] | None:
    """The words that may complete the last word of ``line_before_cursor`` (the text up to
    the cursor on its line), or None where the line is not ours."""
    cell = _CELL_LINE.match(line_before_cursor)
    if cell is not None:
        return _cell_candidates(cell["rest"])
    verb_line = _VERB_LINE.match(line_before_cursor)
    if verb_line is not None:
        return _verb_candidates(verb_line["rest"])
    return None


def _cell_candidates(rest: str) -> list[str]:
    if rest and not rest[0].isspace():
        return []  # "%%burstx": not our magic
    word = rest.split(" ")[-1]
    key, sep, value = word.partition("=")
    if not sep:
        return [w for w in option_words() if w.startswith(key)]
    return [v for v in _values(key) if v.startswith(value)]


def _verb_candidates(rest: str) -> list[str]:
    if rest and not rest[0].isspace():
        return []
    words = rest.split(" ")
    if len(words) <= 2:  # "%burst" + " " + the verb being written
        return [v for v in VERBS if v.startswith(words[-1])]
    verb, word = words[1], words[-1]
    key, sep, value = word.partition("=")
    if sep:
        return [v for v in _values(key) if v.startswith(value)]
    if verb in _VERB_ARGUMENTS and len(words) == 3:
        return [w for w in _VERB_ARGUMENTS[verb]() if w.startswith(word)]
    return []


def _values(key: str) -> list[str]:
    found = _VALUES.get(key)
    return found() if found else []


def _unique(names: list[str]) -> list[str]:
    return [n for n in dict.fromkeys(names) if n]


@context_matcher()
def burst_matcher(context: CompletionContext) -> SimpleMatcherResult:
    """IPython's matcher: on a ``%%burst``/``%burst`` line, ours alone (Jedi's Python names
    mean nothing there); elsewhere, nothing."""
    try:
        words = candidates(context.text_until_cursor)
    except Exception:  # a half-written state folder must never break the user's Tab
        words = []
    if words is None:
        return {"completions": []}
    # Each word replaces IPython's token, the text after the last space or "=": the same
    # split the candidates were chosen by.
    completions = [SimpleCompletion(text=word, type="burst") for word in words]
    return {"completions": completions, "suppress": True, "ordered": True}


def install(shell) -> None:
    """Add the matcher to the shell's completer (once, however often the extension loads)."""
    completer = shell.Completer
    if burst_matcher not in completer.custom_matchers:
        completer.custom_matchers.append(burst_matcher)
