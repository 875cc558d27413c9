"""POST /v1/wallets and the wallet lifecycle: freeze, unfreeze, close."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Response

from commands.api.deps import CommandWriter
from commands.api.schemas import Empty, WalletCreate, WalletFreeze
from commands.model import CloseWallet, FreezeWallet, OpenWallet, UnfreezeWallet
from domain.money import Currency, Money

router = APIRouter(prefix="/v1/wallets", tags=["wallets"])


@router.post("", status_code=201, summary="Open a wallet")
async def open_wallet(body: WalletCreate, writer: CommandWriter) -> Response:
    currency = Currency.of(body.currency)
    limit = Money.parse(body.credit_limit, currency, allow_zero=True)
    merchant = body.merchant_id or writer.principal.merchant_id
    return await writer.run(OpenWallet(merchant, currency, limit.minor, dict(body.metadata)))


@router.post("/{wallet_id}/freeze", summary="Freeze a wallet (no money moves in or out)")
async def freeze_wallet(
    wallet_id: UUID, writer: CommandWriter, body: WalletFreeze | None = None
) -> Response:
    return await writer.run(FreezeWallet(wallet_id, body.reason if body else ""))


@router.post("/{wallet_id}/unfreeze", summary="Unfreeze a frozen wallet")
async def unfreeze_wallet(
    wallet_id: UUID, writer: CommandWriter, body: Empty | None = None
) -> Response:
    return await writer.run(UnfreezeWallet(wallet_id))


@router.post("/{wallet_id}/close", summary="Close a wallet (only at zero balance)")
async def close_wallet(
    wallet_id: UUID, writer: CommandWriter, body: Empty | None = None
) -> Response:
    return await writer.run(CloseWallet(wallet_id))
