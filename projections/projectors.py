"""Projectors: turn domain events into read-model rows. Pure; no I/O of their own.

Each projector owns one read model (table). The runner feeds events in position order,
in batches, and commits the rows together with the tracking position.
"""

from __future__ import annotations

from typing import Any, Protocol

from domain.ledger import world_account_id
from domain.transfer import EXPIRED, POSTED, VOIDED, Transfer
from domain.wallet import ACTIVE, CLOSED, FROZEN, Wallet
from projections.payments import payment_projectors
from projections.ports import BalancesWriter, StatementsWriter, TransfersWriter
from projections.schedules import schedule_projectors
from projections.stored import Handler, State, stored_state


class Projector(Protocol):
    """``name`` is public (CLI, tracking); ``process`` writes through ``writer``.

    ``consumes`` names the event classes (with their subclasses) ``process`` may write
    for: the runner does not decode, nor hand the projector, any other event.

    A projector may also have ``handler(cls)``: the function projecting the stored state
    (``projections.stored``) of a ``cls`` event, or None to be handed the event object
    through ``process``. The runner then skips the domain-event object for that class.
    """

    name: str
    consumes: tuple[type, ...]

    def process(self, event: Any, position: int, writer: Any) -> None: ...


class StateProjector:
    """A projector written as one state handler per event class (``_handlers``);
    ``process`` is the same handlers applied to an event object's stored state."""

    _handlers: dict[type, Handler]

    def handler(self, cls: type) -> Handler | None:
        for base in cls.__mro__:
            found = self._handlers.get(base)
            if found is not None:
                return found
        return None

    def process(self, event: Any, position: int, writer: Any) -> None:
        handle = self.handler(type(event))
        if handle is not None:
            handle(stored_state(event), position, writer)


class BalancesProjector(StateProjector):
    """Wallet balances (posted, pending, available) and status; ``world`` per currency."""

    name = "balances"
    consumes: tuple[type, ...] = (Wallet.Event,)

    def __init__(self) -> None:
        self._handlers = {
            Wallet.Opened: self._opened,
            Wallet.Debited: self._posting(+1),
            Wallet.Credited: self._posting(-1),
            Wallet.HoldPlaced: self._pending,
            Wallet.HoldReleased: self._pending,
            Wallet.Frozen: self._status(FROZEN),
            Wallet.Unfrozen: self._status(ACTIVE),
            Wallet.Closed: self._status(CLOSED),
        }

    @staticmethod
    def _opened(s: State, position: int, writer: BalancesWriter) -> None:
        writer.wallet_opened(
            s["originator_id"],
            s["merchant_id"],
            s["currency"],
            s["credit_limit"],
            s["metadata"],
            s["timestamp"],
            position,
        )

    @staticmethod
    def _posting(world_sign: int) -> Handler:
        """A posting to the wallet. A world counterparty mirrors it: a withdrawal (the
        wallet debited) credits world, a deposit (the wallet credited) debits it."""

        def handle(s: State, position: int, writer: BalancesWriter) -> None:
            at = s["timestamp"]
            version = s["originator_version"]
            writer.wallet_changed(
                s["originator_id"], "posted", s["posted_after"], version, at, position
            )
            counterparty = s["counterparty_id"]
            # The event does not name its currency; the world id encodes it. Cheap: ids are
            # derived, not looked up.
            world_currency = _WORLD_IDS.currency_of(counterparty)
            if world_currency is not None:
                amount = world_sign * s["amount"]
                writer.world_moved(counterparty, world_currency, amount, at, position)

        return handle

    @staticmethod
    def _pending(s: State, position: int, writer: BalancesWriter) -> None:
        writer.wallet_changed(
            s["originator_id"],
            "pending",
            s["pending_after"],
            s["originator_version"],
            s["timestamp"],
            position,
        )

    @staticmethod
    def _status(status: str) -> Handler:
        def handle(s: State, position: int, writer: BalancesWriter) -> None:
            writer.wallet_changed(
                s["originator_id"],
                "status",
                status,
                s["originator_version"],
                s["timestamp"],
                position,
            )

        return handle


class _WorldIds:
    def __init__(self) -> None:
        from domain.currencies import MINOR_UNITS

        self._by_id = {str(world_account_id(code)): code for code in MINOR_UNITS}

    def currency_of(self, account_id: str) -> str | None:
        return self._by_id.get(account_id)


_WORLD_IDS = _WorldIds()


def world_currency_of(account_id: str) -> str | None:
    """The currency if ``account_id`` is a ``world`` account, else None."""
    return _WORLD_IDS.currency_of(account_id)


class StatementsProjector(StateProjector):
    """Every posting of every wallet, with the posted balance after it."""

    name = "statements"
    consumes: tuple[type, ...] = (Wallet.Debited, Wallet.Credited)

    def __init__(self) -> None:
        self._handlers = {Wallet.Debited: self._debited, Wallet.Credited: self._credited}

    @staticmethod
    def _debited(s: State, position: int, writer: StatementsWriter) -> None:
        writer.add_entry(
            (s["originator_id"], position, s["transfer_id"], s["kind"], -s["amount"],
             s["posted_after"], s["counterparty_id"], s["timestamp"])
        )  # fmt: skip

    @staticmethod
    def _credited(s: State, position: int, writer: StatementsWriter) -> None:
        writer.add_entry(
            (s["originator_id"], position, s["transfer_id"], s["kind"], s["amount"],
             s["posted_after"], s["counterparty_id"], s["timestamp"])
        )  # fmt: skip


class TransfersProjector(StateProjector):
    """Transfers with their status (pending, posted, voided, expired)."""

    name = "transfers"
    consumes: tuple[type, ...] = (
        Transfer.Created,
        Transfer.Posted,
        Transfer.Voided,
        Transfer.Expired,
    )

    def __init__(self) -> None:
        self._handlers = {
            Transfer.Created: self._created,
            Transfer.Posted: self._posted,
            Transfer.Voided: self._ended(VOIDED),
            Transfer.Expired: self._ended(EXPIRED),
        }

    @staticmethod
    def _created(s: State, position: int, writer: TransfersWriter) -> None:
        at = s["timestamp"]
        amount = s["amount"]
        pending = s["pending"]
        writer.transfer_created(
            (s["originator_id"], s["merchant_id"], s["kind"], s["debit_account_id"],
             s["credit_account_id"], amount, s["currency"], "pending" if pending else POSTED,
             0 if pending else amount, pending, s["expires_at"], s["metadata"], at, at,
             position)
        )  # fmt: skip

    @staticmethod
    def _posted(s: State, position: int, writer: TransfersWriter) -> None:
        writer.transfer_changed(s["originator_id"], POSTED, s["amount"], s["timestamp"], position)

    @staticmethod
    def _ended(status: str) -> Handler:
        def handle(s: State, position: int, writer: TransfersWriter) -> None:
            writer.transfer_changed(s["originator_id"], status, None, s["timestamp"], position)

        return handle


def all_projectors() -> list[Any]:
    return [
        BalancesProjector(),
        StatementsProjector(),
        TransfersProjector(),
        *payment_projectors(),
        *schedule_projectors(),
    ]
