"""The ``ledger`` command: serve, keys, project, projections, audit, migrate.

Every subcommand builds the same Settings (env ``LEDGER_*``) and so acts on the same
database as a running ``ledger serve``, starting or reusing the embedded server.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from pydantic import SecretStr

from infrastructure.runtime import tune_process
from infrastructure.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for name in ("host", "port"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return Settings(**overrides)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from infrastructure.container import build
    from infrastructure.web import create_app

    settings = _settings(args)
    sandbox = None
    if (args.psp_sandbox or settings.psp_sandbox_autostart) and not settings.psp_sandbox_url:
        from infrastructure.payments import start_sandbox

        sandbox = start_sandbox(settings)
        settings = settings.model_copy(
            update={"psp_sandbox_url": sandbox.url, "psp_sandbox_secret": SecretStr(sandbox.secret)}
        )
        print(f"PSP sandbox: {sandbox.url} (zenith, ramp, monnify)", flush=True)
    try:
        container = build(settings)
    except BaseException:
        if sandbox is not None:
            sandbox.stop()
        raise
    base = f"http://{settings.host}:{settings.port}"
    if sandbox is not None:
        sandbox.register_webhooks(f"{base}/v1/webhooks/psp")
    print(f"REST docs:  {base}/docs", flush=True)
    print(f"OpenAPI:    {base}/openapi.json", flush=True)
    print(f"GraphQL:    {base}/graphql", flush=True)
    if container.api_keys.count() == 0:
        key = container.api_keys.create("platform", "admin", label="bootstrap")
        print(f"Bootstrap admin API key (shown once, store it now): {key}", flush=True)
    app = create_app(container)
    tune_process(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        loop="auto",
        http="auto",
        access_log=False,
        proxy_headers=False,
    )
    if sandbox is not None:
        sandbox.stop()
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    from infrastructure.container import build

    container = build(_settings(args))
    try:
        key = container.api_keys.create(args.merchant, args.role, label=args.label)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        container.close()
    print(key)
    print(f"created {args.role} key for merchant {args.merchant!r}; it is shown only once",
          file=sys.stderr)  # fmt: skip
    return 0


def cmd_project(args: argparse.Namespace) -> int:
    from infrastructure.container import build

    container = build(_settings(args))
    tune_process(container.settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("projection worker running; Ctrl-C to stop", file=sys.stderr)
    try:
        while not stop.is_set():
            if container.runner.run_once() < container.runner.batch_size:
                stop.wait(container.settings.projection_poll_s)
    finally:
        container.close()
    return 0


def cmd_projections_status(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from infrastructure.container import build
    from infrastructure.projection_runner import positions

    container = build(_settings(args))
    try:
        tracked, head = positions(container.pool)
    finally:
        container.close()
    print(f"event store head position: {head}")
    table = Table()
    for col in ("projection", "position", "lag"):
        table.add_column(col, justify="right" if col != "projection" else "left")
    for name, pos in tracked.items():
        table.add_row(name, str(pos), str(head - pos))
    Console().print(table)
    return 0


def cmd_projections_rebuild(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from infrastructure.container import build
    from infrastructure.projection_runner import positions, rebuild

    container = build(_settings(args))
    try:
        _, head = positions(container.pool)
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=False,
        ) as progress:
            task = progress.add_task(f"rebuilding {args.name}", total=head or 1)
            total = rebuild(
                container.pool,
                container.app.mapper,
                args.name,
                container.settings.projection_batch_size,
                lambda n: progress.advance(task, n),
            )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        container.close()
    print(f"rebuilt {args.name} from {total} events and switched over")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from infrastructure.audit import verify
    from infrastructure.container import build

    container = build(_settings(args))
    try:
        report = verify(container, show_progress=not args.quiet)
    finally:
        container.close()
    print(report.summary())
    return 0 if report.ok else 1


def cmd_migrate(args: argparse.Namespace) -> int:
    from infrastructure.container import build

    build(_settings(args)).close()
    print("schema is up to date")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from infrastructure.bench import main as bench_main

    return bench_main(quick=args.quick)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ledger", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API (REST + GraphQL)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument(
        "--psp-sandbox",
        action="store_true",
        help="start the sandbox PSP (zenith, ramp, monnify) beside the service",
    )
    serve.set_defaults(func=cmd_serve)

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys_cmd", required=True)
    create = keys.add_parser("create", help="create a key and print it once")
    create.add_argument("--merchant", required=True)
    create.add_argument(
        "--role", required=True, choices=["merchant", "auditor", "analyst", "admin"]
    )
    create.add_argument("--label", default="")
    create.set_defaults(func=cmd_keys_create)

    project = sub.add_parser("project", help="run the projection worker")
    project.set_defaults(func=cmd_project)

    projections = sub.add_parser("projections", help="read models").add_subparsers(
        dest="projections_cmd", required=True
    )
    status = projections.add_parser("status", help="position and lag of each projection")
    status.set_defaults(func=cmd_projections_status)
    rebuild = projections.add_parser("rebuild", help="rebuild one projection from position 0")
    rebuild.add_argument("name", help="balances, statements or transfers")
    rebuild.set_defaults(func=cmd_projections_rebuild)

    audit = sub.add_parser("audit", help="auditing").add_subparsers(dest="audit_cmd", required=True)
    verify = audit.add_parser("verify", help="replay everything and check every invariant")
    verify.add_argument("--quiet", action="store_true", help="no progress bar")
    verify.set_defaults(func=cmd_audit_verify)

    bench = sub.add_parser("bench", help="run every benchmark workload; writes bench/results.json")
    bench.add_argument("--quick", action="store_true", help="short soak, 200,000 events")
    bench.set_defaults(func=cmd_bench)

    migrate = sub.add_parser("migrate", help="create or update the database schema")
    migrate.set_defaults(func=cmd_migrate)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
