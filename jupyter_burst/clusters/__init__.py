"""Cluster providers and plans: the provider protocol and registry, offers and the
plan search, cluster records, TLS, and one folder per provider (local, aws, ssh)."""
