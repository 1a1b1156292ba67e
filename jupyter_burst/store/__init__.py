"""What outlives processes: the cost ledger (and its salvage), checkpoints, stored results,
the cost arithmetic and the budgets."""
