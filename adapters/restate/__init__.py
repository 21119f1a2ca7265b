"""``restate://`` -- perdure on Restate (server 1.7, Python SDK 1.3).

How SEMANTICS.md maps onto Restate:

==========================  ===============================================================================
perdure                     Restate
==========================  ===============================================================================
run ``run_id``              one invocation of the generic workflow ``perdure`` (:mod:`.service`), keyed by
                            ``run_id``; its input names the perdure workflow and holds the arguments
idempotent start            the workflow key: a second ``/send`` is ``PreviouslyAccepted`` (same run);
                            another workflow name under that id -> ``RunConflictError``
step / tool                 ``ctx.run`` per attempt, storing the envelope JSON; a retried attempt is followed
                            by a durable backoff timer (``ctx.sleep``), so attempt counts survive a kill
approval                    a durable promise named by the approval id, raced with a durable timer; the
                            deadline is recorded by ``ctx.run``; the pending approval lives in workflow state
decision                    the ``decide`` handler, called with the approval id as idempotency key: kept while
                            no worker runs, a second one is ``PreviouslyAccepted`` -> already decided
durable sleep               ``ctx.sleep`` (Restate fixes the wake-up time when first reached)
nondeterminism              Restate compares command names on replay (every name is
                            ``"<position> <kind> <name>"``); a journal mismatch becomes
                            ``NonDeterminismError``, recorded out of band and the invocation killed
workflow error              ``TerminalError("<Type>: <message>")``: no Restate retry
cancel                      kill the invocation (works with no worker alive) -> CANCELLED
status / steps / list       SQL over ``sys_invocation``, ``sys_journal`` and ``state`` (admin API), readable
                            while no worker runs
worker, recovery            hypercorn serving the deployment (SO_REUSEPORT); Restate retries a dead worker's
                            invocations (test profile: every 50-100 ms) and the next worker replays them
==========================  ===============================================================================

Modules: :mod:`.settings` (the URL), :mod:`.entries` (journal layout and reading), :mod:`.journal` (the
:class:`~perdure.core.runtime.Journal`), :mod:`.service` (the Restate service), :mod:`.worker` (serving
it), :mod:`.backend` (client side), :mod:`.http` (ingress and admin APIs), :mod:`.devserver`.
"""

from .backend import RestateBackend
from .devserver import RESTATE_VERSION, RestateDevServer, ensure_restate_server
from .journal import restate_context

__all__ = ["RESTATE_VERSION", "RestateBackend", "RestateDevServer", "ensure_restate_server", "restate_context"]
