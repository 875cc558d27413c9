"""The README tour, executed exactly as written against `ledger serve` in a subprocess."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import _free_port

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]


def tour_script() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- tour:start -->\s*```bash\n(.*?)```\s*<!-- tour:end -->", text, re.S)
    assert match, "README.md has no tour block"
    return match.group(1)


def _serve(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "infrastructure.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read().decode() if proc.stdout else "serve exited")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("ledger serve did not become healthy")


def test_readme_tour_runs_as_written(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env.update(LEDGER_STATE_DIR=str(tmp_path / "state"), LEDGER=f"http://127.0.0.1:{port}")
    proc = _serve(env, port)
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
    assert "AUDIT PASSED" in stdout
    # First start printed where to go and a bootstrap admin key.
    assert "/docs" in out and "/graphql" in out and "Bootstrap admin API key" in out
