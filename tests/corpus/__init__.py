"""Notebooks in the shapes people publish, run plainly and under %%burst and compared (README.md)."""
