"""``python -m infrastructure.psp_sandbox --host 127.0.0.1 --port 8100 [--webhook-url URL]``."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infrastructure.psp_sandbox",
        description="Sandbox PSP: zenith, ramp and monnify with fault injection.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--webhook-url", default=os.environ.get("PSP_SANDBOX_WEBHOOK_URL"))
    parser.add_argument(
        "--webhook-secret",
        default=os.environ.get("PSP_SANDBOX_WEBHOOK_SECRET"),
        help="whsec_... (default: $PSP_SANDBOX_WEBHOOK_SECRET, else random; see GET /_config)",
    )
    parser.add_argument(
        "--async",
        dest="async_providers",
        action="append",
        default=[],
        choices=["zenith", "ramp", "monnify"],
        help="start this provider in async mode (repeatable)",
    )
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)

    import uvicorn

    from infrastructure.psp_sandbox.app import create_app

    uvicorn.run(
        create_app(
            webhook_url=args.webhook_url,
            webhook_secret=args.webhook_secret,
            async_providers=args.async_providers,
        ),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
