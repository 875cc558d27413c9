"""Scheduled and recurring payments: frequency rules and the ScheduledPayment aggregate.

**Everything here is in UTC.** Rules take and give aware datetimes (any offset is accepted
and converted to UTC; a naive datetime is refused), and a rule's time of day is a UTC time:
a merchant's local 09:00 is converted by the caller, and daylight-saving changes are not
followed.

Frequency rules (frozen dataclasses, each with ``next_after`` and ``first_at_or_after``):

- ``Interval(every)``: occurrence k (k = 0, 1, ...) at ``anchor + k * every``; the anchor is
  the schedule's ``starts_at``. ``every`` is whole seconds, at least one minute.
- ``Daily(at)``, ``Weekly(weekday, at)`` (0 = Monday ... 6 = Sunday, like
  ``datetime.weekday()``), ``Monthly(day, at)``: ``day`` 1..31 is clamped to the month's
  last day, so "monthly on day 31" runs on Feb 28 (29 in leap years), Apr 30, and on the
  31st again in March.

As plain dicts (``parse_frequency`` / ``to_dict``)::

    {"type": "interval", "every_seconds": 3600}
    {"type": "daily", "at": "09:00"}
    {"type": "weekly", "weekday": "monday", "at": "09:00"}
    {"type": "monthly", "day": 31, "at": "09:00:30"}

A schedule's occurrences are numbered from 1. Each one is handled exactly once: started
(``OccurrenceStarted``, which comes with the creation of its payment) or skipped
(``OccurrenceSkipped``), in order. ``due(now)`` says what to do next and changes nothing;
``start_occurrence`` and ``skip_occurrence`` accept only the schedule's next occurrence, so
a second scheduler that tries the same one is refused (``OccurrenceAlreadyHandled``). With
the event store's optimistic concurrency on the schedule, that makes each occurrence run
at most once; the scheduler polling due schedules makes it run at least once.

Catch-up after downtime (several occurrences overdue at ``now``), the schedule's
``catch_up`` policy:

- ``"latest"`` (default): run only the most recent overdue occurrence; the older ones are
  skipped with reason ``"missed"``;
- ``"all"``: run every overdue occurrence, oldest first;
- ``"none"``: run an occurrence only if it is at most ``CATCH_UP_GRACE`` (1 hour) overdue;
  older ones are skipped with reason ``"missed"``.

One ``due`` answer holds at most ``MAX_RUNS_PER_PASS`` (10) runs and ``MAX_PLAN`` (100)
occurrences in all; the rest come in the next pass.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import Enum
from typing import Any, Final, NamedTuple
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.context import CommandContext
from domain.errors import (
    CardNumberRejected,
    CurrencyMismatch,
    InvalidFrequency,
    OccurrenceAlreadyHandled,
    OccurrenceMissed,
    OccurrenceNotDue,
    OccurrenceOutOfOrder,
    ScheduleNotActive,
    ValidationError,
)
from domain.money import Money
from domain.pan import find_pan
from domain.payment import MAX_TOKEN_LENGTH, METHODS

# ---- frequency rules ---------------------------------------------------------------------

# The anchor of an Interval that belongs to no schedule yet.
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
MIN_INTERVAL: Final = timedelta(minutes=1)
WEEKDAYS: Final = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

_AT = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9]))?\Z")
_ONE_DAY = timedelta(days=1)


def _utc(t: datetime, name: str = "time") -> datetime:
    """``t`` in UTC; a naive datetime has no defined instant and is refused."""
    if not isinstance(t, datetime):
        raise ValidationError(f"{name} must be a datetime")
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValidationError(f"{name} must carry a time zone (UTC)")
    return t.astimezone(UTC)


def _check_at(at: time) -> None:
    if not isinstance(at, time):
        raise InvalidFrequency("at must be a time of day")
    if at.tzinfo is not None:
        raise InvalidFrequency("at is a UTC time of day without a time zone")
    if at.microsecond:
        raise InvalidFrequency("at is precise to the second")


def _format_at(at: time) -> str:
    return at.strftime("%H:%M:%S" if at.second else "%H:%M")


def _parse_at(value: object) -> time:
    if not isinstance(value, str):
        raise InvalidFrequency('at must be a UTC time of day such as "09:00"')
    match = _AT.match(value)
    if match is None:
        raise InvalidFrequency(f'at {value!r} is not a UTC time of day such as "09:00"')
    hour, minute, second = match.groups()
    return time(int(hour), int(minute), int(second or 0))


def _is_int(value: object) -> bool:
    return type(value) is int  # bool is an int subclass, and a float is no count


@dataclass(frozen=True, slots=True)
class Interval:
    """Every ``every`` (whole seconds, at least a minute) from ``anchor``: occurrence k at
    ``anchor + k * every`` for k >= 0, never before the anchor."""

    every: timedelta
    anchor: datetime = EPOCH

    def __post_init__(self) -> None:
        if not isinstance(self.every, timedelta) or self.every < MIN_INTERVAL:
            raise InvalidFrequency("an interval must be at least one minute")
        if self.every.microseconds:
            raise InvalidFrequency("an interval is a whole number of seconds")
        object.__setattr__(self, "anchor", _utc(self.anchor, "anchor"))

    def first_at_or_after(self, t: datetime) -> datetime:
        t = _utc(t)
        if t <= self.anchor:
            return self.anchor
        return self.anchor + -((self.anchor - t) // self.every) * self.every  # ceiling

    def next_after(self, t: datetime) -> datetime:
        t = _utc(t)
        if t < self.anchor:
            return self.anchor
        return self.anchor + ((t - self.anchor) // self.every + 1) * self.every

    def to_dict(self) -> dict[str, Any]:
        return {"type": "interval", "every_seconds": int(self.every.total_seconds())}


class _Calendar:
    """A rule with at most one occurrence per calendar day, at ``at`` (UTC)."""

    __slots__ = ()
    at: time

    def _on(self, day: date) -> datetime | None:
        """The occurrence on ``day``, if it has one."""
        raise NotImplementedError

    def _step(self, day: date) -> date:
        """A day after ``day`` no later than the next day with an occurrence."""
        return day + _ONE_DAY

    def _first(self, t: datetime, *, strict: bool) -> datetime:
        t = _utc(t)
        day = t.date()
        while True:
            at = self._on(day)
            if at is not None and (at > t or (at == t and not strict)):
                return at
            day = self._step(day)

    def first_at_or_after(self, t: datetime) -> datetime:
        return self._first(t, strict=False)

    def next_after(self, t: datetime) -> datetime:
        return self._first(t, strict=True)


@dataclass(frozen=True, slots=True)
class Daily(_Calendar):
    """Every day at ``at`` (UTC)."""

    at: time

    def __post_init__(self) -> None:
        _check_at(self.at)

    def _on(self, day: date) -> datetime | None:
        return datetime.combine(day, self.at, UTC)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "daily", "at": _format_at(self.at)}


@dataclass(frozen=True, slots=True)
class Weekly(_Calendar):
    """Every week on ``weekday`` (0 = Monday ... 6 = Sunday) at ``at`` (UTC)."""

    weekday: int
    at: time

    def __post_init__(self) -> None:
        if not _is_int(self.weekday) or not 0 <= self.weekday <= 6:
            raise InvalidFrequency("weekday must be 0 (Monday) to 6 (Sunday)")
        _check_at(self.at)

    def _on(self, day: date) -> datetime | None:
        return datetime.combine(day, self.at, UTC) if day.weekday() == self.weekday else None

    def _step(self, day: date) -> date:
        return day + timedelta(days=(self.weekday - day.weekday() - 1) % 7 + 1)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "weekly", "weekday": WEEKDAYS[self.weekday], "at": _format_at(self.at)}


def _days_in_month(year: int, month: int) -> int:
    following = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
    return (following - date(year, month, 1)).days


@dataclass(frozen=True, slots=True)
class Monthly(_Calendar):
    """Every month on ``day`` (1..31) at ``at`` (UTC); a day past the month's end means its
    last day (day 31: Jan 31, Feb 28 or 29, Mar 31, Apr 30, ...)."""

    day: int
    at: time

    def __post_init__(self) -> None:
        if not _is_int(self.day) or not 1 <= self.day <= 31:
            raise InvalidFrequency("day must be 1 to 31 (clamped to the month's last day)")
        _check_at(self.at)

    def day_in(self, year: int, month: int) -> int:
        """The day of the month the occurrence of that month falls on."""
        return min(self.day, _days_in_month(year, month))

    def _on(self, day: date) -> datetime | None:
        if day.day != self.day_in(day.year, day.month):
            return None
        return datetime.combine(day, self.at, UTC)

    def _step(self, day: date) -> date:
        target = self.day_in(day.year, day.month)
        if day.day < target:
            return day.replace(day=target)
        year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
        return date(year, month, self.day_in(year, month))

    def to_dict(self) -> dict[str, Any]:
        return {"type": "monthly", "day": self.day, "at": _format_at(self.at)}


Frequency = Interval | Daily | Weekly | Monthly
FREQUENCY_TYPES: Final = ("interval", "daily", "weekly", "monthly")
_FIELDS: Final = {
    "interval": {"type", "every_seconds"},
    "daily": {"type", "at"},
    "weekly": {"type", "weekday", "at"},
    "monthly": {"type", "day", "at"},
}


def parse_frequency(data: object, *, anchor: datetime = EPOCH) -> Frequency:
    """The rule a plain dict describes (see the module docstring); an interval is anchored
    at ``anchor``. Raises ``InvalidFrequency`` naming what is wrong."""
    if not isinstance(data, Mapping):
        raise InvalidFrequency('frequency must be an object such as {"type": "daily", ...}')
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in _FIELDS:
        raise InvalidFrequency(f"frequency type must be one of {', '.join(FREQUENCY_TYPES)}")
    missing = sorted(_FIELDS[kind] - data.keys())
    if missing:
        raise InvalidFrequency(f"a {kind} frequency needs {', '.join(missing)}")
    unknown = sorted(str(k) for k in data.keys() - _FIELDS[kind])
    if unknown:
        raise InvalidFrequency(f"a {kind} frequency has no field {', '.join(unknown)}")
    if kind == "interval":
        seconds = data["every_seconds"]
        if not _is_int(seconds):
            raise InvalidFrequency("every_seconds must be a whole number of seconds")
        if seconds < MIN_INTERVAL.total_seconds():
            raise InvalidFrequency("every_seconds must be at least 60")
        try:
            every = timedelta(seconds=seconds)
        except OverflowError as exc:
            raise InvalidFrequency("every_seconds is too large") from exc
        return Interval(every, anchor)
    at = _parse_at(data["at"])
    if kind == "daily":
        return Daily(at)
    if kind == "weekly":
        weekday = data["weekday"]
        if not isinstance(weekday, str) or weekday.lower() not in WEEKDAYS:
            # Names only: 0 is Monday to Python but Sunday to cron, and 7 is ISO's Sunday.
            raise InvalidFrequency(f"weekday must be one of {', '.join(WEEKDAYS)}")
        return Weekly(WEEKDAYS.index(weekday.lower()), at)
    day = data["day"]
    if not _is_int(day) or not 1 <= day <= 31:
        raise InvalidFrequency("day must be a whole number from 1 to 31")
    return Monthly(day, at)


# ---- occurrences ---------------------------------------------------------------------------

CATCH_UP_LATEST: Final = "latest"
CATCH_UP_ALL: Final = "all"
CATCH_UP_NONE: Final = "none"
CATCH_UP_POLICIES: Final = (CATCH_UP_LATEST, CATCH_UP_ALL, CATCH_UP_NONE)
# Under "none", how late an occurrence may still run (the scheduler's normal lag).
CATCH_UP_GRACE: Final = timedelta(hours=1)
# Bounds of one scheduler pass over one schedule (one transaction); the rest comes next pass.
MAX_RUNS_PER_PASS: Final = 10
MAX_PLAN: Final = 100

RUN: Final = "run"
SKIP: Final = "skip"

# Why an occurrence was skipped.
SKIP_MISSED: Final = "missed"  # overdue, and the catch-up policy does not run it
SKIP_REQUESTED: Final = "requested"  # the merchant skipped it
MAX_REASON_LENGTH: Final = 100

ACTIVE: Final = "active"
CANCELED: Final = "canceled"
COMPLETED: Final = "completed"

# Event fields holding datetimes: the event store's transcoder must type these back into
# datetimes when it reads an event (until it does, the aggregate accepts RFC 3339 strings).
DATETIME_FIELDS: Final = frozenset({"starts_at", "ends_at", "due_at", "next_due_at"})

# uuid5 namespace of the payments of occurrences. A stored contract: never change it.
OCCURRENCE_NAMESPACE: Final = UUID("5b0f3c1e-8a57-4c1e-9d3e-2f6a4b7c9e01")


def occurrence_payment_key(schedule_id: UUID | str, number: int) -> str:
    """The idempotency key of the payment of occurrence ``number`` of a schedule: the same
    for every scheduler and every retry, so the payment is created once."""
    if not _is_int(number) or number < 1:
        raise ValidationError("an occurrence number is a whole number from 1")
    return f"scheduled-payment:{schedule_id}:{number}"


def occurrence_payment_id(schedule_id: UUID | str, number: int) -> UUID:
    """The id of the payment of occurrence ``number``, derived from its key (uuid5)."""
    return uuid5(OCCURRENCE_NAMESPACE, occurrence_payment_key(schedule_id, number))


class DueOccurrence(NamedTuple):
    """One step of a scheduler pass: run (start, with its payment) or skip occurrence
    ``number``, due at ``due_at``."""

    number: int
    due_at: datetime
    action: str


class Unchanged(Enum):
    """Marks an ``update`` argument left as it is (``None`` means "no end" there)."""

    UNCHANGED = "unchanged"


UNCHANGED: Final = Unchanged.UNCHANGED


def _instant(value: datetime | str) -> datetime:
    # The event store may hand back an RFC 3339 string (see DATETIME_FIELDS).
    return (datetime.fromisoformat(value) if isinstance(value, str) else value).astimezone(UTC)


def _instant_or_none(value: datetime | str | None) -> datetime | None:
    return None if value is None else _instant(value)


def _check_token(token: object) -> str:
    if not isinstance(token, str) or not token:
        raise ValidationError("payment_method_token is required")
    if len(token) > MAX_TOKEN_LENGTH:
        raise ValidationError("payment_method_token is too long")
    if find_pan(token, root="payment_method_token") is not None:
        raise CardNumberRejected(
            "payment_method_token holds a card number; send the provider's payment method token"
        )
    return token


def _check_metadata(metadata: object) -> dict[str, Any]:
    if not isinstance(metadata, dict):
        raise ValidationError("metadata must be an object")
    where = find_pan(metadata, root="metadata")
    if where is not None:
        raise CardNumberRejected(f"{where} holds a card number")
    return metadata


def _check_max_occurrences(value: int | None) -> int | None:
    if value is not None and (not _is_int(value) or value < 1):
        raise ValidationError("max_occurrences must be a whole number from 1, or null")
    return value


def _check_catch_up(value: object) -> str:
    if not isinstance(value, str) or value not in CATCH_UP_POLICIES:
        raise ValidationError(f"catch_up must be one of {', '.join(CATCH_UP_POLICIES)}")
    return value


def _bounded(
    number: int, at: datetime | None, ends_at: datetime | None, max_occurrences: int | None
) -> datetime | None:
    """``at`` if occurrence ``number`` at ``at`` lies within the schedule's end (inclusive)
    and count, else None: there is no such occurrence."""
    if at is None:
        return None
    if max_occurrences is not None and number > max_occurrences:
        return None
    if ends_at is not None and at > ends_at:
        return None
    return at


def _next_or_none(rule: Frequency, t: datetime) -> datetime | None:
    try:
        return rule.next_after(t)
    except OverflowError:  # past year 9999: no more occurrences
        return None


class ScheduledPayment(Aggregate):
    """A payment of ``amount`` minor units of ``currency`` charged to the customer's
    ``payment_method_token`` for ``merchant_id`` (into ``wallet_id``) at every occurrence
    of ``frequency``, from ``starts_at`` until ``ends_at`` (inclusive) or
    ``max_occurrences`` (occurrences skipped count too), whichever comes first.

    ``next_number`` / ``next_due_at`` name the next occurrence to handle; ``next_due_at``
    is None once the schedule is canceled or completed.
    """

    class Event(Aggregate.Event):
        correlation_id: str
        causation_id: str

    class Created(Event, Aggregate.Created):
        merchant_id: str
        wallet_id: str
        amount: int
        currency: str
        method: str
        payment_method_token: str
        frequency: dict[str, Any]
        starts_at: datetime
        ends_at: datetime | None
        max_occurrences: int | None
        catch_up: str
        metadata: dict[str, Any]
        next_due_at: datetime

    class Updated(Event):
        """The merchant changed the schedule (``changed`` names what); every updatable
        field carries its value after the change, and ``next_due_at`` the next occurrence
        under the new terms (None: the schedule is completed)."""

        amount: int
        frequency: dict[str, Any]
        ends_at: datetime | None
        max_occurrences: int | None
        catch_up: str
        metadata: dict[str, Any]
        payment_method_token: str
        changed: list[str]
        next_due_at: datetime | None

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, ScheduledPayment)
            aggregate.amount = self.amount
            aggregate.frequency = self.frequency
            aggregate.rule = parse_frequency(self.frequency, anchor=aggregate.starts_at)
            aggregate.ends_at = _instant_or_none(self.ends_at)
            aggregate.max_occurrences = self.max_occurrences
            aggregate.catch_up = self.catch_up
            aggregate.metadata = self.metadata
            aggregate.payment_method_token = self.payment_method_token
            aggregate.advance(self.next_due_at)

    class OccurrenceStarted(Event):
        """Occurrence ``number`` (due at ``due_at``) runs: payment ``payment_id`` is created
        in the same transaction."""

        number: int
        due_at: datetime
        payment_id: str
        next_due_at: datetime | None

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, ScheduledPayment)
            aggregate.started_count += 1
            aggregate.last_payment_id = self.payment_id
            aggregate.handled(self.number, self.due_at, self.next_due_at)

    class OccurrenceSkipped(Event):
        """Occurrence ``number`` (due at ``due_at``) will never run (``reason``: ``missed``,
        ``requested``, ...)."""

        number: int
        due_at: datetime
        reason: str
        next_due_at: datetime | None

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, ScheduledPayment)
            aggregate.skipped_count += 1
            aggregate.handled(self.number, self.due_at, self.next_due_at)

    class Canceled(Event):
        reason: str

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, ScheduledPayment)
            aggregate.status = CANCELED
            aggregate.next_due_at = None

    @event(Created)
    def __init__(
        self,
        merchant_id: str,
        wallet_id: str,
        amount: int,
        currency: str,
        method: str,
        payment_method_token: str,
        frequency: dict[str, Any],
        starts_at: datetime,
        ends_at: datetime | None,
        max_occurrences: int | None,
        catch_up: str,
        metadata: dict[str, Any],
        next_due_at: datetime,
        correlation_id: str,
        causation_id: str,
    ) -> None:
        self.merchant_id = merchant_id
        self.wallet_id = wallet_id
        self.amount = amount
        self.currency = currency
        self.method = method
        self.payment_method_token = payment_method_token
        self.frequency = frequency
        self.starts_at = _instant(starts_at)
        self.rule: Frequency = parse_frequency(frequency, anchor=self.starts_at)
        self.ends_at = _instant_or_none(ends_at)
        self.max_occurrences = max_occurrences
        self.catch_up = catch_up
        self.metadata = metadata
        self.status = ACTIVE
        self.next_number = 1
        self.next_due_at: datetime | None = _instant(next_due_at)
        self.last_due_at: datetime | None = None
        self.last_payment_id: str | None = None
        self.started_count = 0
        self.skipped_count = 0

    # ---- state changes shared by the events' apply ----------------------------------------

    def advance(self, next_due_at: datetime | str | None) -> None:
        self.next_due_at = _instant_or_none(next_due_at)
        if self.next_due_at is None and self.status == ACTIVE:
            self.status = COMPLETED

    def handled(
        self, number: int, due_at: datetime | str, next_due_at: datetime | str | None
    ) -> None:
        self.next_number = number + 1
        self.last_due_at = _instant(due_at)
        self.advance(next_due_at)

    @classmethod
    def create(
        cls,
        schedule_id: UUID,
        *,
        merchant_id: str,
        wallet_id: str,
        amount: Money,
        method: str,
        payment_method_token: str,
        frequency: Mapping[str, Any],
        starts_at: datetime,
        ends_at: datetime | None = None,
        max_occurrences: int | None = None,
        catch_up: str = CATCH_UP_LATEST,
        metadata: dict[str, Any],
        ctx: CommandContext,
    ) -> ScheduledPayment:
        """A new schedule. Its first occurrence is the rule's first at or after
        ``starts_at``, and never before the schedule exists (``ctx.now``): nothing is
        charged for the past. Card numbers are refused: only provider tokens."""
        if not merchant_id:
            raise ValidationError("merchant_id is required")
        if not isinstance(wallet_id, str) or not wallet_id:
            raise ValidationError("wallet_id is required")
        amount.require_positive()
        if method not in METHODS:
            raise ValidationError(f"method must be one of {', '.join(METHODS)}")
        _check_token(payment_method_token)
        _check_metadata(metadata)
        start = _utc(starts_at, "starts_at")
        end = None if ends_at is None else _utc(ends_at, "ends_at")
        if end is not None and end < start:
            raise ValidationError("ends_at must not be before starts_at")
        _check_max_occurrences(max_occurrences)
        _check_catch_up(catch_up)
        rule = parse_frequency(frequency, anchor=start)
        try:
            first = rule.first_at_or_after(max(start, _utc(ctx.now, "now")))
        except OverflowError:
            first = None
        if _bounded(1, first, end, max_occurrences) is None:
            raise ValidationError("the schedule has no occurrence between now and ends_at")
        return cls._create(
            cls.Created,
            id=schedule_id,
            merchant_id=merchant_id,
            wallet_id=wallet_id,
            amount=amount.minor,
            currency=amount.currency.code,
            method=method,
            payment_method_token=payment_method_token,
            frequency=rule.to_dict(),
            starts_at=start,
            ends_at=end,
            max_occurrences=max_occurrences,
            catch_up=catch_up,
            metadata=metadata,
            next_due_at=first,
            **ctx.stamp(),
        )

    # ---- derived state ---------------------------------------------------------------------

    def money(self, minor: int) -> Money:
        return Money.of(minor, self.currency)

    @property
    def is_active(self) -> bool:
        return self.status == ACTIVE

    def following(self, number: int, due_at: datetime) -> datetime | None:
        """When occurrence ``number + 1`` is due, given occurrence ``number`` is due at
        ``due_at``; None when the schedule ends with ``number``."""
        return _bounded(
            number + 1, _next_or_none(self.rule, due_at), self.ends_at, self.max_occurrences
        )

    def _action(self, due_at: datetime, following: datetime | None, now: datetime) -> str:
        """What the catch-up policy does with the occurrence due at ``due_at`` (<= now)."""
        if self.catch_up == CATCH_UP_ALL:
            return RUN
        if self.catch_up == CATCH_UP_NONE:
            return RUN if now - due_at <= CATCH_UP_GRACE else SKIP
        return RUN if following is None or following > now else SKIP  # latest

    def due(self, now: datetime) -> list[DueOccurrence]:
        """What a scheduler should do at ``now``: the overdue occurrences from the next
        one on, oldest first, each to run or skip (reason ``"missed"``) by the catch-up
        policy. Changes nothing. At most ``MAX_RUNS_PER_PASS`` runs and ``MAX_PLAN``
        occurrences; after them, the next pass (with the same ``now``) answers the rest.
        Empty when nothing is due, or the schedule is canceled or completed."""
        now = _utc(now, "now")
        plan: list[DueOccurrence] = []
        if self.status != ACTIVE:
            return plan
        number, at = self.next_number, self.next_due_at
        runs = 0
        while at is not None and at <= now and len(plan) < MAX_PLAN and runs < MAX_RUNS_PER_PASS:
            following = self.following(number, at)
            action = self._action(at, following, now)
            plan.append(DueOccurrence(number, at, action))
            if action == RUN:
                runs += 1
            number, at = number + 1, following
        return plan

    # ---- guards (no mutation) --------------------------------------------------------------

    def require_next(self, number: int, due_at: datetime) -> datetime:
        """Guard for handling occurrence ``number``: it must be the schedule's next one, due
        at ``due_at``. Answers ``due_at`` in UTC."""
        if not _is_int(number) or number < 1:
            raise ValidationError("an occurrence number is a whole number from 1")
        at = _utc(due_at, "due_at")
        if number < self.next_number:
            raise OccurrenceAlreadyHandled(
                f"occurrence {number} of scheduled payment {self.id} was already handled"
            )
        if self.status != ACTIVE:
            raise ScheduleNotActive(f"scheduled payment {self.id} is {self.status}")
        if number > self.next_number:
            raise OccurrenceOutOfOrder(
                f"scheduled payment {self.id}: occurrence {self.next_number} comes first, "
                f"not {number}"
            )
        if at != self.next_due_at:
            due = self.next_due_at.isoformat() if self.next_due_at else ""
            raise OccurrenceOutOfOrder(
                f"scheduled payment {self.id}: occurrence {number} is due at {due}, "
                f"not {at.isoformat()} (the schedule changed since it was read)"
            )
        return at

    def require_runnable(self, number: int, due_at: datetime, now: datetime) -> datetime:
        """Guard for ``start_occurrence``: the next occurrence, due by ``now``, and one the
        catch-up policy runs (not one it skips as missed)."""
        at = self.require_next(number, due_at)
        now = _utc(now, "now")
        if now < at:
            raise OccurrenceNotDue(
                f"occurrence {number} of scheduled payment {self.id} is due at {at.isoformat()}"
            )
        if self._action(at, self.following(number, at), now) == SKIP:
            raise OccurrenceMissed(
                f"occurrence {number} of scheduled payment {self.id} (due at {at.isoformat()}) "
                f"was missed; the catch-up policy {self.catch_up!r} skips it"
            )
        return at

    # ---- commands (each checks its guard before it changes anything) -----------------------

    def start_occurrence(
        self, number: int, due_at: datetime, payment_id: UUID | str, ctx: CommandContext
    ) -> None:
        """Run occurrence ``number``: the caller creates payment ``payment_id`` (see
        ``occurrence_payment_id``) and saves both in one transaction."""
        if not isinstance(payment_id, UUID | str) or not str(payment_id):
            raise ValidationError("payment_id is required")
        at = self.require_runnable(number, due_at, ctx.now)
        self.trigger_event(
            self.OccurrenceStarted,
            number=number,
            due_at=at,
            payment_id=str(payment_id),
            next_due_at=self.following(number, at),
            **ctx.stamp(),
        )

    def skip_occurrence(
        self, number: int, due_at: datetime, reason: str, ctx: CommandContext
    ) -> None:
        """Skip occurrence ``number`` for good: overdue and ``"missed"`` by the catch-up
        policy, or skipped ahead of time at the merchant's request (``"requested"``)."""
        if not isinstance(reason, str) or not reason or len(reason) > MAX_REASON_LENGTH:
            raise ValidationError(f"reason must be 1 to {MAX_REASON_LENGTH} characters")
        at = self.require_next(number, due_at)
        self.trigger_event(
            self.OccurrenceSkipped,
            number=number,
            due_at=at,
            reason=reason,
            next_due_at=self.following(number, at),
            **ctx.stamp(),
        )

    def update(
        self,
        ctx: CommandContext,
        *,
        amount: Money | None = None,
        frequency: Mapping[str, Any] | None = None,
        ends_at: datetime | Unchanged | None = UNCHANGED,
        max_occurrences: int | Unchanged | None = UNCHANGED,
        catch_up: str | None = None,
        metadata: dict[str, Any] | None = None,
        payment_method_token: str | None = None,
    ) -> bool:
        """Change an active schedule (``None`` / ``UNCHANGED``: leave as it is); answers
        whether anything changed (nothing changed: no event).

        A new frequency takes effect from ``ctx.now`` (and never before ``starts_at``, which
        stays the anchor of an interval): occurrences of the old rule not yet handled are
        dropped, numbering goes on, and the next occurrence is due strictly after the last
        one handled. A new ``ends_at`` or ``max_occurrences`` that leaves no occurrence
        completes the schedule."""
        if self.status != ACTIVE:
            raise ScheduleNotActive(f"scheduled payment {self.id} is {self.status}")
        new_amount = self.amount
        if amount is not None:
            if amount.currency.code != self.currency:
                raise CurrencyMismatch(
                    f"scheduled payment {self.id} is in {self.currency}, "
                    f"the amount is {amount.currency.code}"
                )
            amount.require_positive()
            new_amount = amount.minor
        rule = self.rule
        if frequency is not None:
            rule = parse_frequency(frequency, anchor=self.starts_at)
        new_end = self.ends_at
        if not isinstance(ends_at, Unchanged):
            new_end = None if ends_at is None else _utc(ends_at, "ends_at")
            if new_end is not None and new_end < self.starts_at:
                raise ValidationError("ends_at must not be before starts_at")
        new_max = self.max_occurrences
        if not isinstance(max_occurrences, Unchanged):
            new_max = _check_max_occurrences(max_occurrences)
            if new_max is not None and new_max < self.next_number - 1:
                raise ValidationError(
                    f"max_occurrences cannot be below the {self.next_number - 1} "
                    "occurrences already handled"
                )
        new_catch_up = self.catch_up if catch_up is None else _check_catch_up(catch_up)
        new_metadata = self.metadata if metadata is None else _check_metadata(metadata)
        new_token = (
            self.payment_method_token
            if payment_method_token is None
            else _check_token(payment_method_token)
        )
        values = {
            "amount": new_amount,
            "frequency": rule.to_dict(),
            "ends_at": new_end,
            "max_occurrences": new_max,
            "catch_up": new_catch_up,
            "metadata": new_metadata,
            "payment_method_token": new_token,
        }
        changed = [name for name, value in values.items() if value != getattr(self, name)]
        if not changed:
            return False
        candidate = self.next_due_at
        if rule != self.rule:
            try:
                candidate = rule.first_at_or_after(max(self.starts_at, _utc(ctx.now, "now")))
                if self.last_due_at is not None and candidate <= self.last_due_at:
                    candidate = rule.next_after(self.last_due_at)
            except OverflowError:
                candidate = None
        self.trigger_event(
            self.Updated,
            **values,
            changed=changed,
            next_due_at=_bounded(self.next_number, candidate, new_end, new_max),
            **ctx.stamp(),
        )
        return True

    def cancel(self, ctx: CommandContext, reason: str = SKIP_REQUESTED) -> None:
        """Stop the schedule for good (DELETE): no occurrence runs after this."""
        if self.status != ACTIVE:
            raise ScheduleNotActive(f"scheduled payment {self.id} is already {self.status}")
        if not isinstance(reason, str) or not reason or len(reason) > MAX_REASON_LENGTH:
            raise ValidationError(f"reason must be 1 to {MAX_REASON_LENGTH} characters")
        self.trigger_event(self.Canceled, reason=reason, **ctx.stamp())
