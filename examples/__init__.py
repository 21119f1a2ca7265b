"""Runnable examples. ``demo_agent`` is the workflow behind ``perdure demo``."""
