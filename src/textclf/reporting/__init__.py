"""Reporting: experiments as DVC records them (`dvc exp show --json`), replicate seeds, and
the offline HTML pieces (charts, pages) that `report` and the drift page render with.

Imports only the shared modules.
"""
