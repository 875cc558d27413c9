"""POST /v1/transfers, /v1/transfers/batch, /v1/transfers/{id}/post and /void."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Response

from commands.api.deps import CommandWriter
from commands.api.schemas import Empty, TransferBatchCreate, TransferCreate, TransferPost
from commands.model import CreateTransfer, PostTransfer, TransferBatch, VoidTransfer
from domain.money import Money

router = APIRouter(prefix="/v1/transfers", tags=["transfers"])


def to_command(body: TransferCreate) -> CreateTransfer:
    return CreateTransfer(
        debit_wallet_id=body.debit_wallet_id,
        credit_wallet_id=body.credit_wallet_id,
        amount=Money.parse(body.amount, body.currency),
        pending=body.pending,
        timeout_seconds=body.timeout_seconds,
        metadata=dict(body.metadata),
    )


def batch_command(body: TransferBatchCreate) -> TransferBatch:
    return TransferBatch(tuple(map(to_command, body.transfers)), body.atomic)


@router.post("", status_code=201, summary="Move money between two wallets (optionally pending)")
async def create_transfer(body: TransferCreate, writer: CommandWriter) -> Response:
    return await writer.run(to_command(body))


@router.post("/batch", status_code=201, summary="Up to 8,190 transfers, atomic or per item")
async def create_transfer_batch(body: TransferBatchCreate, writer: CommandWriter) -> Response:
    return await writer.run(batch_command(body))


@router.post("/{transfer_id}/post", summary="Capture all or part of a pending transfer")
async def post_transfer(
    transfer_id: UUID, writer: CommandWriter, body: TransferPost | None = None
) -> Response:
    amount = body.amount if body else None
    currency = body.currency if body else None
    return await writer.run(PostTransfer(transfer_id, amount, currency))


@router.post("/{transfer_id}/void", summary="Release a pending transfer")
async def void_transfer(
    transfer_id: UUID, writer: CommandWriter, body: Empty | None = None
) -> Response:
    return await writer.run(VoidTransfer(transfer_id))
