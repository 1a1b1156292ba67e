"""What runs in the notebook's kernel: the ``%%burst`` magic and its options, the cell's
namespace analysis (AST), merging results back, tracebacks, output rendering, the cell's
status line, the verbs of background jobs and the ``%burst offers`` and ``%burst cost``
reports. Nothing here runs on a cluster machine."""
