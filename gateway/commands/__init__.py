"""Command groups of the ``twinedge`` CLI, one module each (see gateway/cli.py)."""
