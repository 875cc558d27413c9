"""The command API's routes, handlers and middleware, added to a FastAPI app."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from commands.api import deposits, errors, health, payments, problems_doc, transfers, wallets
from commands.api import scheduled_payments as schedules
from commands.api.deps import ApiContext, reject_card_numbers
from commands.api.health import HealthProbe
from commands.api.lane import CommandLane, LaneRoute
from commands.api.schemas import (
    MAX_BATCH,
    DepositCreate,
    TransferBatchCreate,
    TransferCreate,
    WithdrawalCreate,
)

BATCH_ITEM_BYTES = 1024  # room per batch item, metadata included


def lane_routes() -> dict[str, LaneRoute]:
    """The writes the fast lane serves: each with its route's own model and command."""
    return {
        "/v1/transfers": LaneRoute(TransferCreate, transfers.to_command),
        "/v1/transfers/batch": LaneRoute(TransferBatchCreate, transfers.batch_command),
        "/v1/deposits": LaneRoute(DepositCreate, deposits.deposit_command),
        "/v1/withdrawals": LaneRoute(WithdrawalCreate, deposits.withdrawal_command),
    }


def install_command_api(
    app: FastAPI,
    context: ApiContext,
    health_probe: HealthProbe,
    max_body_bytes: int,
    *,
    fast_lane: bool = True,
) -> None:
    app.state.ledger = context
    app.state.health_probe = health_probe
    for module in (wallets, deposits, transfers, payments, schedules, health, problems_doc):
        app.include_router(module.router, dependencies=[Depends(reject_card_numbers)])
    app.include_router(payments.webhooks)
    errors.install(app)
    if fast_lane:  # added first: it runs inside the body-size limit
        app.add_middleware(CommandLane, context=context, routes=lane_routes())
    # A full batch (8,190 transfers, ~150 bytes each without metadata) exceeds 1 MiB.
    batch_limit = max(max_body_bytes, MAX_BATCH * BATCH_ITEM_BYTES)
    app.add_middleware(
        errors.BodySizeLimit,
        limit=max_body_bytes,
        per_path={"/v1/transfers/batch": batch_limit},
    )
