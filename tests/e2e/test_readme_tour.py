"""The README tour, executed exactly as written against `ledger serve` in a subprocess."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import _free_port
from tests.e2e.server import ROOT, ledger_env, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def tour_script() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- tour:start -->\s*```bash\n(.*?)```\s*<!-- tour:end -->", text, re.S)
    assert match, "README.md has no tour block"
    return match.group(1)


def test_readme_tour_runs_as_written(tmp_path: Path) -> None:
    port, psp_port = _free_port(), _free_port()
    env = ledger_env(
        LEDGER_STATE_DIR=str(tmp_path / "state"),
        LEDGER=f"http://127.0.0.1:{port}",
        # as `make run` does (`ledger serve --psp-sandbox`), on a free port
        LEDGER_PSP_SANDBOX_AUTOSTART="true",
        LEDGER_PSP_SANDBOX_PORT=str(psp_port),
        PSP=f"http://127.0.0.1:{psp_port}",
    )
    proc = start_server(env, port)
    try:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", tour_script()],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out = proc.communicate(timeout=20)[0].decode()
        except subprocess.TimeoutExpired:
            proc.kill()
            out = proc.communicate()[0].decode()
    assert result.returncode == 0, result.stdout + result.stderr
    stdout = result.stdout
    assert "replayed: 200" in stdout
    assert "/problems/insufficient-funds" in stdout
    assert '"posted":{"amount":"75.00","currency":"USD"}' in stdout.replace(" ", "")
    assert '"available":{"amount":"75.00"}' in stdout.replace(" ", "")
    assert "partially_refunded 20.00 0.88 5.00" in stdout
    assert "/problems/card-number-rejected" in stdout and "4242 4242" not in stdout
    assert "AUDIT PASSED" in stdout
    # First start printed where to go and a bootstrap admin key.
    assert "/docs" in out and "/graphql" in out and "Bootstrap admin API key" in out
