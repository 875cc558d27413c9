"""``ledger audit verify``: replay the event store from position 0, check every invariant,
and compare every read-model row with the value recomputed from the events.

Read models are read in one REPEATABLE READ snapshot together with their tracking
positions, and compared with the replayed state at exactly those positions, so the audit
can run beside a live service.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.persistence import StoredEvent
from psycopg import sql

from domain.audit import Replayer
from domain.ledger import world_account_id
from domain.transfer import Transfer
from domain.wallet import Wallet
from infrastructure.container import Container
from infrastructure.projection_runner import EVENTS_TABLE

BATCH = 10_000


@dataclass
class AuditReport:
    events: int = 0
    wallets: int = 0
    transfers: int = 0
    head: int = 0
    currencies: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    checked_rows: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations and not self.mismatches

    def summary(self) -> str:
        lines = [
            f"events replayed:     {self.events} (head position {self.head})",
            f"wallets:             {self.wallets}",
            f"transfers:           {self.transfers}",
            f"read-model rows:     {self.checked_rows} compared",
            "currencies (wallets + world = 0): "
            + (", ".join(f"{c} {v}" for c, v in sorted(self.currencies.items())) or "none"),
            f"invariant violations: {len(self.violations)}",
            f"read-model mismatches: {len(self.mismatches)}",
        ]
        lines += [f"  VIOLATION {v}" for v in self.violations[:50]]
        lines += [f"  MISMATCH  {m}" for m in self.mismatches[:50]]
        lines.append("AUDIT PASSED" if self.ok else "AUDIT FAILED")
        return "\n".join(lines)


@dataclass
class _Snapshot:
    positions: dict[str, int]
    balances: dict[str, tuple[Any, ...]]
    transfers: dict[str, tuple[Any, ...]]
    statements: dict[tuple[str, int], tuple[int, int, str]]


def _snapshot(container: Container) -> _Snapshot:
    with container.pool.connection() as conn, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        positions = {
            str(n): int(p)
            for n, p in conn.execute(
                "SELECT name, position FROM projection_tracking"
                " WHERE name IN ('balances', 'statements', 'transfers')"
            ).fetchall()
        }
        balances = {
            str(r[0]): tuple(r[1:])
            for r in conn.execute(
                "SELECT wallet_id, merchant_id, currency, status, credit_limit, posted, pending,"
                " version, is_system FROM rm_balances"
            )
        }
        transfers = {
            str(r[0]): tuple(r[1:])
            for r in conn.execute(
                "SELECT transfer_id, status, amount, posted_amount, currency,"
                " debit_account_id::text, credit_account_id::text FROM rm_transfers"
            )
        }
        statements = {
            (str(r[0]), int(r[1])): (int(r[2]), int(r[3]), str(r[4]))
            for r in conn.execute(
                "SELECT wallet_id, position, amount, posted_after, transfer_id::text"
                " FROM rm_statement_entries"
            )
        }
    return _Snapshot(positions, balances, transfers, statements)


def _events(container: Container) -> Iterator[tuple[int, Any]]:
    mapper = container.app.mapper
    last = 0
    query = sql.SQL(
        "SELECT notification_id, originator_id, originator_version, topic, state FROM {}"
        " WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
    ).format(sql.Identifier(EVENTS_TABLE))
    while True:
        with container.pool.connection() as conn:
            rows = conn.execute(query, (last, BATCH)).fetchall()
        if not rows:
            return
        for nid, oid, version, topic, state in rows:
            yield int(nid), mapper.to_domain_event(StoredEvent(oid, version, topic, bytes(state)))
        last = int(rows[-1][0])


class _Comparator:
    def __init__(self, snap: _Snapshot, report: AuditReport) -> None:
        self.snap = snap
        self.report = report
        self.statement_pos = snap.positions.get("statements", 0)
        self.pending_checks = sorted(
            (pos, name) for name, pos in snap.positions.items() if name != "statements"
        )

    def _mismatch(self, message: str) -> None:
        if len(self.report.mismatches) < 1000:
            self.report.mismatches.append(message)

    def before(self, position: int, replayer: Replayer) -> None:
        """Run the checks for every projection whose position is below ``position``."""
        while self.pending_checks and self.pending_checks[0][0] < position:
            pos, name = self.pending_checks.pop(0)
            if name == "balances":
                self.balances(replayer, pos)
            elif name == "transfers":
                self.transfers(replayer, pos)

    def statement_event(self, event: Any, position: int) -> None:
        if position > self.statement_pos:
            return
        wid = str(event.originator_id)
        row = self.snap.statements.pop((wid, position), None)
        sign = 1 if isinstance(event, Wallet.Credited) else -1
        want = (sign * event.amount, event.posted_after, event.transfer_id)
        self.report.checked_rows += 1
        if row != want:
            self._mismatch(
                f"statements: wallet {wid} position {position}: row {row}, events {want}"
            )

    def finish(self, replayer: Replayer) -> None:
        self.before(2**63, replayer)
        for (wid, pos), row in list(self.snap.statements.items())[:20]:
            self._mismatch(f"statements: row for wallet {wid} at {pos} has no event: {row}")

    def balances(self, replayer: Replayer, pos: int) -> None:
        rows = dict(self.snap.balances)
        for wid, w in replayer.wallets.items():
            row = rows.pop(wid, None)
            want = (w.merchant_id, w.currency, w.status, w.credit_limit, w.posted, w.pending,
                    w.version, False)  # fmt: skip
            self.report.checked_rows += 1
            if row != want:
                self._mismatch(f"balances@{pos}: wallet {wid}: row {row}, events {want}")
        for currency, total in replayer.world.items():
            wid = str(world_account_id(currency))
            row = rows.pop(wid, None)
            if total == 0 and row is None:
                continue
            self.report.checked_rows += 1
            if row is None or row[4] != total:
                self._mismatch(
                    f"balances@{pos}: world {currency}: row {row}, events posted {total}"
                )
        for wid, row in list(rows.items())[:20]:
            self._mismatch(f"balances@{pos}: row for {wid} has no events: {row}")

    def transfers(self, replayer: Replayer, pos: int) -> None:
        rows = dict(self.snap.transfers)
        for tid, t in replayer.transfers.items():
            row = rows.pop(tid, None)
            want = (t.status, t.amount, t.posted_amount, t.currency, t.debit_account_id,
                    t.credit_account_id)  # fmt: skip
            self.report.checked_rows += 1
            if row != want:
                self._mismatch(f"transfers@{pos}: transfer {tid}: row {row}, events {want}")
        for tid, row in list(rows.items())[:20]:
            self._mismatch(f"transfers@{pos}: row for {tid} has no events: {row}")


def verify(container: Container, *, show_progress: bool = False) -> AuditReport:
    report = AuditReport()
    snap = _snapshot(container)
    with container.pool.connection() as conn:
        head_row = conn.execute(
            sql.SQL("SELECT COALESCE(MAX(notification_id), 0) FROM {}").format(
                sql.Identifier(EVENTS_TABLE)
            )
        ).fetchone()
    report.head = int(head_row[0]) if head_row else 0
    replayer = Replayer()
    compare = _Comparator(snap, report)

    progress: Any = None
    task: Any = None
    if show_progress:
        from rich.progress import Progress

        progress = Progress(transient=True)
        progress.start()
        task = progress.add_task("replaying events", total=report.head or 1)
    try:
        for position, event in _events(container):
            compare.before(position, replayer)
            replayer.apply(event, position)
            if isinstance(event, Wallet.Debited | Wallet.Credited):
                compare.statement_event(event, position)
            if progress is not None and replayer.events % 5000 == 0:
                progress.update(task, completed=position)
        compare.finish(replayer)
    finally:
        if progress is not None:
            progress.stop()
    replayer.finish()
    report.events = replayer.events
    report.wallets = len(replayer.wallets)
    report.transfers = sum(1 for t in replayer.transfers.values() if isinstance(t, Transfer))
    totals: dict[str, int] = {}
    for w in replayer.wallets.values():
        totals[w.currency] = totals.get(w.currency, 0) + w.posted
    report.currencies = {c: totals[c] + replayer.world.get(c, 0) for c in totals}
    report.violations = [str(v) for v in replayer.violations]
    return report
