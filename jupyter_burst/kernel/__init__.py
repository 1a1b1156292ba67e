"""What runs in the notebook's kernel: the ``%%burst`` magic and its options, the cell's
namespace analysis (AST), merging results back, tracebacks, output rendering, the cell's
status line and the verbs of background jobs. Nothing here runs on a cluster machine."""
