"""Benchmarks for jupyter-burst, run as ``python -m bench`` (not part of the test suite).

Every figure in ``bench/README.md`` comes from one run of that command; see ``--help``.
"""
