"""``memory://`` -- the in-memory reference engine (the executable form of SEMANTICS.md)."""

from .backend import MemoryBackend, engine_for
from .engine import MemoryEngine

__all__ = ["MemoryBackend", "MemoryEngine", "engine_for"]
