"""Run `ledger serve` as a real subprocess for end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def ledger_env(**overrides: str) -> dict[str, str]:
    """This process's environment without any LEDGER_* setting, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env.update(overrides)
    return env


def start_server(
    env: dict[str, str], port: int, *, capture: bool = True
) -> subprocess.Popen[bytes]:
    """Start `ledger serve` on ``port`` and wait until /v1/health answers 200.

    With ``capture`` its output can be read after it stops; a long-running load should
    not capture (nobody drains the pipe while it runs)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "infrastructure.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
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
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("ledger serve did not become healthy")
