"""What each ``%burst`` verb does, in one place: ``%burst VERB?`` and ``%burst help VERB``
print it, ``%burst?`` lists it, tab completion offers the verbs, and the README's table of
verbs is written from it (``python -m jupyter_burst.tools.readme_tables``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Verb:
    usage: str  # after "%burst "
    summary: str  # one line
    returns: str = ""  # what `x = %burst VERB` keeps, where it keeps something


VERBS: dict[str, Verb] = {
    "status": Verb(
        "status",
        "the clusters, one row each (provider, state, slots, idle countdown, address), and "
        "where the last start of each spent its time",
        "a table of clusters: status[0].name, .provider, .state, .slots, .devices, .idle_minutes",
    ),
    "down": Verb(
        "down [NAME] [provider=P]",
        "stop one cluster (a name on every provider it runs on, unless provider= says which) "
        "or all of them, and wait until their processes are gone",
    ),
    "offers": Verb(
        "offers gpus=N [gpu_mem=GiB] [spot=yes|no] [region=a,b]",
        "every enabled provider's plans for N GPUs, cheapest first, with where the prices "
        "come from",
        "a table of plans: offers[0].price_per_hour, .gpus, .nodes, .offer.instance_type",
    ),
    "cost": Verb(
        "cost",
        "the clusters running now, the last jobs with their cost, the spend this session, "
        "today and this month",
        "cost.running and cost.jobs (tables), cost.session, cost.today, cost.month, "
        "cost.budget_left",
    ),
    "jobs": Verb(
        "jobs",
        "the background jobs (%%burst async): cluster, status, ranks, attempts, results",
        "a table of jobs: jobs[0].name, .job, .status, .seconds, .results",
    ),
    "logs": Verb("logs NAME [-f]", "a background job's output; -f follows it until it ends"),
    "wait": Verb("wait NAME", "wait for a background job and bring its results into the notebook"),
    "cancel": Verb("cancel NAME", "stop a background job and its remote work"),
    "attach": Verb(
        "attach NAME",
        "bring a finished background job's results into the notebook, or say it still runs",
    ),
    "checkpoints": Verb(
        "checkpoints [JOB]",
        "the checkpoints kept, of one job or all, newest last",
        "a table of checkpoints: checkpoints[0].job, .step, .saved, .bytes",
    ),
    "restore": Verb(
        "restore JOB [step=K] as NAME",
        "a checkpoint's state into the notebook as NAME (JOB from %burst checkpoints, or last)",
    ),
    "estimate": Verb(
        "estimate MODEL [optimizer=adam] [batch=EXPR] [precision=fp32|bf16|fp16]",
        "the memory a training step of MODEL needs, and how many GPUs of which size fit it",
    ),
    "gc": Verb(
        "gc [--yes] [--region a,b]",
        "AWS, Lambda and GCP machines of yours without a live cluster; --yes ends them",
    ),
    "cache": Verb(
        "cache [clear] [CLUSTER]",
        "this notebook's values kept on the cluster's workers; clear frees them",
    ),
    "env": Verb(
        "env",
        "the environment cloud nodes get from this kernel, its hash, and which clusters have it",
    ),
    "prewarm": Verb(
        "prewarm [on|off]",
        "whether JupyterLab starts a %%burst cell's cluster while you write it (its cost is said)",
    ),
    "help": Verb("help [VERB]", "this list, or one verb's help (also %burst VERB?)"),
}

CELL_USAGE = (
    "%%burst [gpus=1] [provider=local] [cluster=NAME] [idle=MIN] [timeout=MIN] [send=a,b] "
    "[exclude=a,b] [return=a,b] [retries=2] [async] [name=NAME] [budget=USD] "
    "[max_hourly=USD] [spot=yes|no] [gpu_mem=GiB] [region=a,b]"
)


def verb_help(name: str) -> str:
    """``%burst VERB?``: its usage, what it does, and what it returns."""
    verb = VERBS[name]
    lines = [f"%burst {verb.usage}", "", f"  {verb.summary}."]
    if verb.returns:
        lines.append(f"  Returns {verb.returns}.")
    return "\n".join(lines)


def overview() -> str:
    """``%burst?``: the cell's options, then one line per verb."""
    width = max(len(v.usage) for v in VERBS.values())
    lines = [
        CELL_USAGE,
        "",
        "Run this cell on a Dask cluster; its output streams back and its results land here.",
        "%%burst async name=NAME ...  -- run it in the background; the notebook stays free",
        "",
    ]
    lines += [f"%burst {v.usage.ljust(width)}  -- {v.summary}" for v in VERBS.values()]
    lines += ["", "%burst VERB? shows one verb's help."]
    return "\n".join(lines)


def readme_table() -> str:
    """The README's table of verbs (Markdown)."""
    rows = ["| verb | what it does | `x = %burst ...` keeps |", "|---|---|---|"]
    for verb in VERBS.values():
        usage, summary, keeps = (
            text.replace("|", "\\|") for text in (verb.usage, verb.summary, verb.returns)
        )
        rows.append(f"| `%burst {usage}` | {summary} | {keeps} |")
    return "\n".join(rows)
