"""perdure's JSON as Temporal payloads, and the names perdure uses inside Temporal.

Everything perdure hands to Temporal is already JSON text made by perdure's one codec (workflow
arguments and output, step envelopes, decisions). It travels as a ``json/plain`` payload holding exactly
that text (``RawValue``): nothing is pickled or re-encoded, the Temporal UI shows readable JSON, and a
history read back by :mod:`.history` yields the very envelope text the worker recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic_core
from temporalio.api.common.v1 import Payload
from temporalio.common import RawValue

from ...core.types import StepCall, StepKind

# Temporal-side names. Workflow *types* are the perdure workflow names (one dynamic workflow class runs
# them all), so the Temporal UI and `temporal workflow list` show the user's own names.
STEP_ACTIVITY = "perdure.step"
DECISION_SIGNAL = "perdure.decide"
WAKE_SIGNAL = "perdure.wake"  # makes a worker replay a run now (after a replay check found it broken)
FAILED_REASON = "perdure.failed "  # termination reason of a run perdure failed itself: + ErrorInfo JSON
CANCEL_REASON = "perdure: cancelled"  # termination reason of perdure's cancel (the only CANCELLED termination)
GATE_WORKFLOW = "perdure.decision"
# A pending approval, readable with no worker alive: memo key ``perdure.pending/<approval id>`` (one per
# approval, so concurrent approvals each show until decided), removed once it is decided or timed out.
MEMO_PENDING_PREFIX = "perdure.pending/"
# Runs started before that kept their (single) pending approval under this one key; still read, and cleared.
MEMO_PENDING_LEGACY = "perdure.pending"
MEMO_RECORD = "perdure.record"  # outcome of a sleep or approval: {"position": n, "envelope": {...}}
MEMO_RUN = "perdure.run"  # set on a continued Temporal run: {"created_at": first start, "generation": n}
SLEEP_SUMMARY = "perdure.sleep@"  # timer summary prefix; the position follows


def raw(text: str | bytes) -> RawValue:
    """A ``json/plain`` payload holding ``text`` (already valid JSON) unchanged."""
    data = text.encode() if isinstance(text, str) else text
    return RawValue(Payload(metadata={"encoding": b"json/plain"}, data=data))


def text_of(payload: Payload | RawValue) -> str:
    """The JSON text inside a payload written by :func:`raw` (or by Temporal's JSON converter)."""
    p = payload.payload if isinstance(payload, RawValue) else payload
    return p.data.decode()


def pending_key(approval_id: str) -> str:
    """The memo key holding approval ``approval_id`` while it is pending."""
    return MEMO_PENDING_PREFIX + approval_id


def pending_approvals(memo: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The pending approvals in a run's memo (``PendingApproval`` fields + ``position``), by position."""
    found = {k: v for k, v in memo.items() if k.startswith(MEMO_PENDING_PREFIX) and isinstance(v, dict)}
    legacy = memo.get(MEMO_PENDING_LEGACY)
    if isinstance(legacy, dict) and pending_key(legacy.get("approval_id", "")) not in found:
        found[MEMO_PENDING_LEGACY] = legacy
    return sorted(found.values(), key=lambda p: int(p["position"]))


def gate_id(run_id: str, approval_id: str) -> str:
    """Workflow id of the tiny workflow whose existence means "this approval was decided"."""
    return f"{GATE_WORKFLOW}/{run_id}/{approval_id}"


def encode_call(call: StepCall) -> RawValue:
    """A step call as the activity's input: readable JSON with the arguments as a nested object."""
    meta = pydantic_core.to_json(
        {
            "run_id": call.run_id,
            "position": call.position,
            "name": call.name,
            "kind": call.kind.value,
            "idempotency_key": call.idempotency_key,
        }
    )
    return raw(meta[:-1] + b',"args":' + call.args_json.encode() + b"}")


def decode_call(value: RawValue | Payload | dict[str, Any]) -> StepCall:
    data = value if isinstance(value, dict) else pydantic_core.from_json(text_of(value))
    return StepCall(
        run_id=data["run_id"],
        position=int(data["position"]),
        name=data["name"],
        kind=StepKind(data["kind"]),
        args_json=pydantic_core.to_json(data["args"]).decode(),
        idempotency_key=data["idempotency_key"],
    )


def record_json(position: int, envelope: str) -> RawValue:
    """The memo value recording a sleep's or approval's outcome at ``position``."""
    return raw(f'{{"position":{position},"envelope":{envelope}}}')
