"""Cluster providers and plans: the provider protocol and registry, offers, the plan search,
gathering offers from the enabled providers and the shipped price catalogs, the daily
budget's check before a launch, settling what ended unseen, cluster records, TLS, and one
folder per provider (local, aws, ssh)."""
