"""Every command's handler, by command type."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from commands.handlers import HANDLERS as LEDGER_HANDLERS
from commands.handlers import Result, UnitOfWork
from commands.model import Command
from commands.payment_handlers import PAYMENT_HANDLERS
from commands.schedule_commands import SCHEDULE_HANDLERS

HANDLERS: dict[type[Any], Callable[[Any, UnitOfWork], Result]] = {
    **LEDGER_HANDLERS,
    **PAYMENT_HANDLERS,
    **SCHEDULE_HANDLERS,
}


def handle(command: Command, uow: UnitOfWork) -> Result:
    return HANDLERS[type(command)](command, uow)
