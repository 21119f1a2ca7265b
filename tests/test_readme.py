"""The README's "API in one screen" runs as written, on the engine it names (DBOS on SQLite), with a worker.

Only what the snippet leaves to the reader is filled in: a body for ``ask_model`` (elided with ``...``), a
``billing_api`` to call, and a shorter durable sleep. Each substitution must apply, so a README edit that
moves them fails here instead of silently testing something else.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"

PRELUDE = '''
class _Billing:
    calls: list[str] = []

    def create(self, customer, amount, idempotency_key):
        self.calls.append(idempotency_key)
        return f"invoice {customer} {amount} {idempotency_key}"

billing_api = _Billing()
'''

DRIVER = '''
async def _with_a_worker() -> None:
    worker = asyncio.create_task(perdure.serve("dbos+sqlite:///app.sqlite"))
    try:
        await asyncio.wait_for(main(), 120)
    finally:
        worker.cancel()
    assert billing_api.calls == ["bill-ACME-2026-11:3"], billing_api.calls

asyncio.run(_with_a_worker())
'''


def readme_snippet() -> str:
    text = README.read_text()
    match = re.search(r"## The API in one screen\n\n```python\n(.*?)```", text, re.S)
    assert match, "README has no 'The API in one screen' python block"
    return match.group(1)


def substitute(code: str, old: str, new: str) -> str:
    assert old in code, f"the README snippet no longer contains {old!r}"
    return code.replace(old, new)


def test_the_readme_api_snippet_runs_as_written_on_dbos_sqlite(tmp_path: Path) -> None:
    code = readme_snippet()
    code = substitute(code, "async def ask_model(prompt: str) -> str: ...",
                      "async def ask_model(prompt: str) -> str:\n    return '42'")
    code = substitute(code, "await perdure.sleep(60)", "await perdure.sleep(0.5)")
    script = tmp_path / "snippet.py"
    script.write_text(PRELUDE + code + DRIVER)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # main() prints the result and the journal: the invoice went out once, after the approval and the sleep.
    result_line = proc.stdout.strip().splitlines()[-1]
    assert result_line.startswith("invoice ACME 42 bill-ACME-2026-11:3 "), result_line
    assert [kind for kind in re.findall(r"kind=<StepKind\.(\w+)", result_line)] == ["STEP", "APPROVAL", "SLEEP", "TOOL"]
    assert "'approved': True, 'by': 'alice'" in result_line
