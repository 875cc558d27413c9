"""One handler per command: load aggregates, call the domain, return the response body.

Handlers never save: the engine saves everything a unit of work touched in one call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from uuid import NAMESPACE_URL, UUID, SafeUUID, uuid5

from eventsourcing.domain import Aggregate

from commands.model import (
    CloseWallet,
    CreateTransfer,
    Deposit,
    ExpireTransfer,
    FreezeWallet,
    OpenWallet,
    PostTransfer,
    Principal,
    TransferBatch,
    UnfreezeWallet,
    VoidTransfer,
    Withdraw,
)
from commands.problems import problem
from commands.views import transfer_view, wallet_view
from domain import ledger
from domain.context import CommandContext
from domain.errors import (
    CurrencyMismatch,
    Forbidden,
    LedgerError,
    NotFound,
    TransferNotPending,
    ValidationError,
)
from domain.money import Currency, Money
from domain.payment import Payment
from domain.payment_ledger import PLATFORM, system_account_id, system_credit_limit
from domain.payout import Payout
from domain.transfer import DEPOSIT, TRANSFER, WITHDRAWAL, Transfer
from domain.wallet import Wallet

ID_NAMESPACE = uuid5(NAMESPACE_URL, "urn:payments-ledger:ids")
_ID_NAMESPACE_BYTES = ID_NAMESPACE.bytes
_CLEAR_VERSION_AND_VARIANT = ~((0xF000 << 64) | (0xC000 << 48))
_VERSION_5_RFC_4122 = (5 << 76) | (0x8000 << 48)


def derived_id(*parts: str) -> UUID:
    """Deterministic id from the request's scope: a retried request creates the same
    aggregate, so even two processes racing on one key cannot create it twice.

    ``uuid5(ID_NAMESPACE, "\x1f".join(parts))``, without its per-call import and
    namespace encoding (one per transfer of a batch)."""
    name = "\x1f".join(parts).encode()
    digest = hashlib.sha1(_ID_NAMESPACE_BYTES + name, usedforsecurity=False).digest()
    # UUID(bytes=digest[:16], version=5) without its argument checks: version 5, RFC 4122
    # variant. tests/unit/test_writer_fastpath.py checks it against uuid5 itself.
    value = int.from_bytes(digest[:16]) & _CLEAR_VERSION_AND_VARIANT | _VERSION_5_RFC_4122
    uuid = object.__new__(UUID)
    object.__setattr__(uuid, "int", value)
    object.__setattr__(uuid, "is_safe", SafeUUID.unknown)
    return uuid


class UnitOfWork:
    """Aggregates loaded or created by one command; each loaded at most once."""

    def __init__(
        self,
        load: Callable[[UUID], Aggregate],
        principal: Principal,
        ctx: CommandContext,
        id_seed: str,
    ) -> None:
        self._load = load
        self.principal = principal
        self.ctx = ctx
        self.id_seed = id_seed
        self._aggregates: dict[UUID, Aggregate] = {}

    def new_id(self, kind: str, index: int = 0) -> UUID:
        return derived_id(kind, self.principal.merchant_id, self.id_seed, str(index))

    def add(self, aggregate: Aggregate) -> None:
        self._aggregates[aggregate.id] = aggregate

    def _get(self, aggregate_id: UUID) -> Aggregate:
        agg = self._aggregates.get(aggregate_id)
        if agg is None:
            agg = self._load(aggregate_id)
            self._aggregates[aggregate_id] = agg
        return agg

    def wallet(self, wallet_id: UUID) -> Wallet:
        agg = self._get(wallet_id)
        if not isinstance(agg, Wallet) or not self.principal.may_see(agg.merchant_id):
            # Another merchant's wallet is reported as absent, not as forbidden.
            raise NotFound(f"wallet {wallet_id} not found")
        return agg

    def transfer(self, transfer_id: UUID) -> Transfer:
        agg = self._get(transfer_id)
        if not isinstance(agg, Transfer) or not self.principal.may_see(agg.merchant_id):
            raise NotFound(f"transfer {transfer_id} not found")
        return agg

    def find(self, aggregate_id: UUID) -> Aggregate | None:
        """The aggregate, or None when there is none with that id."""
        try:
            return self._get(aggregate_id)
        except NotFound:
            return None

    def find_transfer(self, transfer_id: UUID) -> Transfer | None:
        agg = self.find(transfer_id)
        return agg if isinstance(agg, Transfer) else None

    def payment(self, payment_id: UUID) -> Payment:
        agg = self._get_or_none(payment_id)
        if not isinstance(agg, Payment) or not self.principal.may_see(agg.merchant_id):
            raise NotFound(f"payment {payment_id} not found")
        return agg

    def payout(self, payout_id: UUID) -> Payout:
        agg = self._get_or_none(payout_id)
        if not isinstance(agg, Payout) or not self.principal.may_see(agg.merchant_id):
            raise NotFound(f"payout {payout_id} not found")
        return agg

    def _get_or_none(self, aggregate_id: UUID) -> Aggregate | None:
        return self.find(aggregate_id)

    def system_wallet(self, role: str, currency: str, provider: str = "") -> Wallet:
        """A platform account (clearing, fees, disputes), opened by the first posting."""
        wallet_id = system_account_id(role, currency, provider)
        agg = self.find(wallet_id)
        if agg is None:
            metadata = {"system": role, **({"provider": provider} if provider else {})}
            agg = Wallet.open(
                wallet_id,
                PLATFORM,
                Currency.of(currency),
                system_credit_limit(role),
                metadata,
                self.ctx,
            )
            self.add(agg)
        assert isinstance(agg, Wallet)
        return agg

    def wallet_of(self, account_id: str, currency: str) -> Wallet | None:
        if account_id == str(ledger.world_account_id(currency)):
            return None
        return self.wallet(UUID(account_id))

    def touched(self) -> list[Aggregate]:
        """Every aggregate this command loaded or created, in the order it did."""
        return list(self._aggregates.values())

    def wallets_view(self, *wallets: Wallet | None) -> list[dict[str, Any]]:
        return [wallet_view(w) for w in wallets if w is not None]


Result = tuple[int, dict[str, Any]]


def _expiry(uow: UnitOfWork, pending: bool, timeout_seconds: int | None) -> Any:
    if timeout_seconds is None:
        return None
    if not pending:
        raise ValidationError("timeout_seconds applies only to pending transfers")
    return uow.ctx.now + timedelta(seconds=timeout_seconds)


def open_wallet(cmd: OpenWallet, uow: UnitOfWork) -> Result:
    if cmd.merchant_id != uow.principal.merchant_id and not uow.principal.is_admin:
        raise Forbidden("a merchant key may open wallets only for its own merchant")
    wallet = Wallet.open(
        uow.new_id("wallet"), cmd.merchant_id, cmd.currency, cmd.credit_limit, cmd.metadata, uow.ctx
    )
    uow.add(wallet)
    return 201, {"wallet": wallet_view(wallet)}


def freeze_wallet(cmd: FreezeWallet, uow: UnitOfWork) -> Result:
    wallet = uow.wallet(cmd.wallet_id)
    wallet.freeze(cmd.reason, uow.ctx)
    return 200, {"wallet": wallet_view(wallet)}


def unfreeze_wallet(cmd: UnfreezeWallet, uow: UnitOfWork) -> Result:
    wallet = uow.wallet(cmd.wallet_id)
    wallet.unfreeze(uow.ctx)
    return 200, {"wallet": wallet_view(wallet)}


def close_wallet(cmd: CloseWallet, uow: UnitOfWork) -> Result:
    wallet = uow.wallet(cmd.wallet_id)
    wallet.close(uow.ctx)
    return 200, {"wallet": wallet_view(wallet)}


def own(uow: UnitOfWork, wallet: Wallet) -> Wallet:
    """Moving money needs the wallet to be the caller's own (or the caller an admin)."""
    if not uow.principal.is_admin and wallet.merchant_id != uow.principal.merchant_id:
        raise NotFound(f"wallet {wallet.id} not found")
    return wallet


def deposit(cmd: Deposit, uow: UnitOfWork) -> Result:
    wallet = own(uow, uow.wallet(cmd.wallet_id))
    transfer = ledger.open_transfer(
        uow.new_id("transfer"),
        kind=DEPOSIT,
        debit=None,
        credit=wallet,
        amount=cmd.amount,
        pending=False,
        expires_at=None,
        merchant_id=wallet.merchant_id,
        metadata=cmd.metadata,
        ctx=uow.ctx,
    )
    uow.add(transfer)
    return 201, {"transfer": transfer_view(transfer), "wallets": uow.wallets_view(wallet)}


def withdraw(cmd: Withdraw, uow: UnitOfWork) -> Result:
    wallet = own(uow, uow.wallet(cmd.wallet_id))
    transfer = ledger.open_transfer(
        uow.new_id("transfer"),
        kind=WITHDRAWAL,
        debit=wallet,
        credit=None,
        amount=cmd.amount,
        pending=cmd.pending,
        expires_at=_expiry(uow, cmd.pending, cmd.timeout_seconds),
        merchant_id=wallet.merchant_id,
        metadata=cmd.metadata,
        ctx=uow.ctx,
    )
    uow.add(transfer)
    return 201, {"transfer": transfer_view(transfer), "wallets": uow.wallets_view(wallet)}


def _create_transfer(cmd: CreateTransfer, uow: UnitOfWork, index: int) -> Transfer:
    debit = own(uow, uow.wallet(cmd.debit_wallet_id))
    credit = own(uow, uow.wallet(cmd.credit_wallet_id))
    transfer = ledger.open_transfer(
        uow.new_id("transfer", index),
        kind=TRANSFER,
        debit=debit,
        credit=credit,
        amount=cmd.amount,
        pending=cmd.pending,
        expires_at=_expiry(uow, cmd.pending, cmd.timeout_seconds),
        merchant_id=debit.merchant_id,
        metadata=cmd.metadata,
        ctx=uow.ctx,
    )
    uow.add(transfer)
    return transfer


def create_transfer(cmd: CreateTransfer, uow: UnitOfWork) -> Result:
    transfer = _create_transfer(cmd, uow, 0)
    debit = uow.wallet(cmd.debit_wallet_id)
    credit = uow.wallet(cmd.credit_wallet_id)
    return 201, {"transfer": transfer_view(transfer), "wallets": uow.wallets_view(debit, credit)}


def post_transfer(cmd: PostTransfer, uow: UnitOfWork) -> Result:
    transfer = uow.transfer(cmd.transfer_id)
    debit = uow.wallet_of(transfer.debit_account_id, transfer.currency)
    credit = uow.wallet_of(transfer.credit_account_id, transfer.currency)
    if debit is None:  # it debits world: a deposit, never pending
        raise TransferNotPending(f"transfer {transfer.id} is {transfer.status}, not pending")
    if cmd.currency is not None and cmd.currency != transfer.currency:
        raise CurrencyMismatch(f"transfer {transfer.id} is in {transfer.currency}")
    amount = Money.parse(cmd.amount, transfer.currency) if cmd.amount is not None else None
    ledger.post_transfer(transfer, debit, credit, amount, uow.ctx)
    return 200, {"transfer": transfer_view(transfer), "wallets": uow.wallets_view(debit, credit)}


def void_transfer(cmd: VoidTransfer, uow: UnitOfWork) -> Result:
    transfer = uow.transfer(cmd.transfer_id)
    debit = uow.wallet_of(transfer.debit_account_id, transfer.currency)
    if debit is None:  # it debits world: a deposit, never pending
        raise TransferNotPending(f"transfer {transfer.id} is {transfer.status}, not pending")
    ledger.void_transfer(transfer, debit, uow.ctx)
    return 200, {"transfer": transfer_view(transfer), "wallets": uow.wallets_view(debit)}


def expire_transfer(cmd: ExpireTransfer, uow: UnitOfWork) -> Result:
    transfer = uow.transfer(cmd.transfer_id)
    debit = uow.wallet_of(transfer.debit_account_id, transfer.currency)
    if debit is None:  # it debits world: a deposit, never pending
        raise TransferNotPending(f"transfer {transfer.id} is {transfer.status}, not pending")
    ledger.expire_transfer(transfer, debit, uow.ctx)
    return 200, {"transfer": transfer_view(transfer)}


class BatchItemFailed(LedgerError):
    """An atomic batch failed because one item did; nothing was written."""

    def __init__(self, index: int, error: LedgerError) -> None:
        super().__init__(f"item {index}: {error.detail}")
        self.index = index
        self.error = error
        self.code = error.code
        self.title = error.title
        self.status = error.status


def transfer_batch(cmd: TransferBatch, uow: UnitOfWork) -> Result:
    """Atomic: all or none (the first failure fails the whole batch).
    Non-atomic: each item succeeds or fails alone; per-item results, in order."""
    results: list[dict[str, Any]] = []
    for index, item in enumerate(cmd.transfers):
        try:
            transfer = _create_transfer(item, uow, index)
        except LedgerError as exc:
            if cmd.atomic:
                raise BatchItemFailed(index, exc) from exc
            results.append(
                {
                    "index": index,
                    "status": "failed",
                    "error": {"type": exc.code, "detail": exc.detail},
                }
            )
        else:
            results.append({"index": index, "status": "ok", "transfer": transfer_view(transfer)})
    succeeded = sum(1 for r in results if r["status"] == "ok")
    body: dict[str, Any] = {
        "atomic": cmd.atomic,
        "succeeded": succeeded,
        "failed": len(results) - succeeded,
        "results": results,
    }
    if succeeded:
        return 201, body
    # Nothing was written: a problem document (served as problem+json) with the results.
    detail = f"all {len(results)} transfers of the batch failed; see results"
    failed = problem("batch-failed", "Every transfer of the batch failed", 422, detail)
    return 422, {**failed, **body}


HANDLERS: dict[type[Any], Callable[[Any, UnitOfWork], Result]] = {
    OpenWallet: open_wallet,
    FreezeWallet: freeze_wallet,
    UnfreezeWallet: unfreeze_wallet,
    CloseWallet: close_wallet,
    Deposit: deposit,
    Withdraw: withdraw,
    CreateTransfer: create_transfer,
    PostTransfer: post_transfer,
    VoidTransfer: void_transfer,
    TransferBatch: transfer_batch,
    ExpireTransfer: expire_transfer,
}
