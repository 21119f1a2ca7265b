"""``dbos+sqlite:///path`` and ``dbos+postgresql://...``: perdure on DBOS (see journal.py for the mapping)."""

from .backend import DBOSBackend

__all__ = ["DBOSBackend"]
