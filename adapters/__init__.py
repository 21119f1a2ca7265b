"""One folder per engine; each maps SEMANTICS.md onto that engine. Loaded lazily by URL scheme."""
