"""POST /v1/deposits (pay-in: world -> wallet) and POST /v1/withdrawals (pay-out)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from commands.api.deps import CommandWriter
from commands.api.schemas import DepositCreate, WithdrawalCreate
from commands.model import Deposit, Withdraw
from domain.money import Money

router = APIRouter(prefix="/v1", tags=["deposits and withdrawals"])


def deposit_command(body: DepositCreate) -> Deposit:
    return Deposit(body.wallet_id, Money.parse(body.amount, body.currency), dict(body.metadata))


def withdrawal_command(body: WithdrawalCreate) -> Withdraw:
    amount = Money.parse(body.amount, body.currency)
    return Withdraw(body.wallet_id, amount, body.pending, body.timeout_seconds, dict(body.metadata))


@router.post("/deposits", status_code=201, summary="Credit a wallet from world (pay-in)")
async def create_deposit(body: DepositCreate, writer: CommandWriter) -> Response:
    return await writer.run(deposit_command(body))


@router.post("/withdrawals", status_code=201, summary="Debit a wallet to world (pay-out)")
async def create_withdrawal(body: WithdrawalCreate, writer: CommandWriter) -> Response:
    return await writer.run(withdrawal_command(body))
