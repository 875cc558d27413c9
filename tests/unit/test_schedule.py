"""Scheduled payments in memory: frequency rules (with an independent calendar oracle),
catch-up policies after downtime, the guards that make each occurrence run exactly once,
replay, and a stateful property with two schedulers racing on copies of one schedule.
"""

from __future__ import annotations

import calendar
import copy
import itertools
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import Mapper
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from domain.context import CommandContext
from domain.errors import (
    CardNumberRejected,
    CurrencyMismatch,
    InvalidAmount,
    InvalidFrequency,
    LedgerError,
    OccurrenceAlreadyHandled,
    OccurrenceMissed,
    OccurrenceNotDue,
    OccurrenceOutOfOrder,
    ScheduleNotActive,
    ScheduleStateError,
    ValidationError,
)
from domain.money import Money
from domain.payment import CARD, METHODS
from domain.schedule import (
    ACTIVE,
    CANCELED,
    CATCH_UP_ALL,
    CATCH_UP_GRACE,
    CATCH_UP_LATEST,
    CATCH_UP_NONE,
    CATCH_UP_POLICIES,
    COMPLETED,
    DATETIME_FIELDS,
    EPOCH,
    MAX_PLAN,
    MAX_RUNS_PER_PASS,
    RUN,
    SKIP,
    SKIP_MISSED,
    SKIP_REQUESTED,
    UNCHANGED,
    Daily,
    DueOccurrence,
    Frequency,
    Interval,
    Monthly,
    ScheduledPayment,
    Weekly,
    occurrence_payment_id,
    occurrence_payment_key,
    parse_frequency,
)
from infrastructure.eventstore import OrjsonTranscoder

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)  # a Tuesday
DAILY_9 = {"type": "daily", "at": "09:00"}
PAN = "4242424242424242"
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
_ids = itertools.count(1)


def new_id() -> UUID:
    return UUID(int=next(_ids))


def ctx(now: datetime = T0, corr: str = "corr-1", cause: str = "cause-1") -> CommandContext:
    return CommandContext(now=now, correlation_id=corr, causation_id=cause)


def usd(minor: int) -> Money:
    return Money.of(minor, "USD")


def at(y: int, m: int, d: int, hh: int = 9, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=UTC)


def new_schedule(frequency: dict[str, Any] | None = None, **kw: Any) -> ScheduledPayment:
    args: dict[str, Any] = {
        "merchant_id": "acme",
        "wallet_id": "w-1",
        "amount": usd(1_000),
        "method": CARD,
        "payment_method_token": "tok_visa_abc123",
        "frequency": DAILY_9 if frequency is None else frequency,
        "starts_at": T0,
        "metadata": {"plan": "gold"},
        "ctx": ctx(),
    }
    args.update(kw)
    return ScheduledPayment.create(new_id(), **args)


def state(s: ScheduledPayment) -> dict[str, Any]:
    return copy.deepcopy({k: v for k, v in vars(s).items() if k != "_pending_events"})


def replay(events: list[Any]) -> ScheduledPayment:
    rebuilt: Any = None
    for e in events:
        rebuilt = e.mutate(rebuilt)
    assert isinstance(rebuilt, ScheduledPayment)
    return rebuilt


def assert_refused(
    error: type[LedgerError], s: ScheduledPayment, action: Callable[[], Any]
) -> LedgerError:
    """``action`` raises exactly ``error`` and leaves the schedule as it was, no new events."""
    s.collect_events()
    before = state(s)
    with pytest.raises(LedgerError) as info:
        action()
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    assert s.pending_events == []
    assert state(s) == before
    return info.value


def run_pass(s: ScheduledPayment, now: datetime) -> list[DueOccurrence]:
    """One scheduler pass at ``now``: do what ``due(now)`` says."""
    plan = s.due(now)
    c = ctx(now=now)
    for number, due_at, action in plan:
        if action == RUN:
            s.start_occurrence(number, due_at, occurrence_payment_id(s.id, number), c)
        else:
            s.skip_occurrence(number, due_at, SKIP_MISSED, c)
    return plan


def handled(events: list[Any]) -> list[Any]:
    return [
        e
        for e in events
        if isinstance(e, ScheduledPayment.OccurrenceStarted | ScheduledPayment.OccurrenceSkipped)
    ]


# ---- frequency rules: parsing and serialising -------------------------------------------


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        ({"type": "interval", "every_seconds": 3600}, Interval(HOUR)),
        ({"type": "daily", "at": "09:00"}, Daily(time(9))),
        ({"type": "weekly", "weekday": "monday", "at": "23:59"}, Weekly(0, time(23, 59))),
        ({"type": "weekly", "weekday": "sunday", "at": "00:00"}, Weekly(6, time(0))),
        ({"type": "monthly", "day": 31, "at": "09:00:30"}, Monthly(31, time(9, 0, 30))),
    ],
)
def test_frequencies_parse_and_serialise(data: dict[str, Any], rule: Frequency) -> None:
    assert parse_frequency(data) == rule
    assert rule.to_dict() == data
    assert parse_frequency(rule.to_dict()) == rule


def test_weekday_names_are_case_insensitive_and_serialised_lower_case() -> None:
    rule = parse_frequency({"type": "weekly", "weekday": "Friday", "at": "08:15"})
    assert rule == Weekly(4, time(8, 15))
    assert rule.to_dict()["weekday"] == "friday"


def test_an_interval_is_anchored_where_it_is_parsed() -> None:
    anchor = at(2030, 1, 1, 9, 17)
    rule = parse_frequency({"type": "interval", "every_seconds": 3600}, anchor=anchor)
    assert rule == Interval(HOUR, anchor)
    assert rule.to_dict() == {"type": "interval", "every_seconds": 3600}  # not the anchor


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (None, "must be an object"),
        ([], "must be an object"),
        ({}, "type must be one of"),
        ({"type": "yearly"}, "type must be one of"),
        ({"type": 3}, "type must be one of"),
        ({"type": "interval"}, "needs every_seconds"),
        ({"type": "interval", "every_seconds": 59}, "at least 60"),
        ({"type": "interval", "every_seconds": 0}, "at least 60"),
        ({"type": "interval", "every_seconds": -3600}, "at least 60"),
        ({"type": "interval", "every_seconds": 3600.0}, "whole number"),
        ({"type": "interval", "every_seconds": "3600"}, "whole number"),
        ({"type": "interval", "every_seconds": True}, "whole number"),
        ({"type": "interval", "every_seconds": 10**20}, "too large"),
        ({"type": "interval", "every_seconds": 60, "at": "09:00"}, "has no field at"),
        ({"type": "daily"}, "needs at"),
        ({"type": "daily", "at": "9:00"}, "time of day"),
        ({"type": "daily", "at": "24:00"}, "time of day"),
        ({"type": "daily", "at": "09:60"}, "time of day"),
        ({"type": "daily", "at": "09:00:60"}, "time of day"),
        ({"type": "daily", "at": "09:00\n"}, "time of day"),
        ({"type": "daily", "at": "09:00+02:00"}, "time of day"),
        ({"type": "daily", "at": 900}, "time of day"),
        ({"type": "weekly", "at": "09:00"}, "needs weekday"),
        ({"type": "weekly", "weekday": 0, "at": "09:00"}, "weekday must be one of"),
        ({"type": "weekly", "weekday": "mon", "at": "09:00"}, "weekday must be one of"),
        ({"type": "monthly", "at": "09:00"}, "needs day"),
        ({"type": "monthly", "day": 0, "at": "09:00"}, "1 to 31"),
        ({"type": "monthly", "day": 32, "at": "09:00"}, "1 to 31"),
        ({"type": "monthly", "day": "1", "at": "09:00"}, "1 to 31"),
        ({"type": "monthly", "day": 1.0, "at": "09:00"}, "1 to 31"),
        ({"type": "monthly", "day": 1, "at": "09:00", "tz": "Europe/Paris"}, "no field tz"),
    ],
)
def test_bad_frequencies_are_refused_clearly(data: Any, says: str) -> None:
    with pytest.raises(InvalidFrequency, match=says) as info:
        parse_frequency(data)
    assert isinstance(info.value, ValidationError)
    assert info.value.code == "invalid-frequency"


@pytest.mark.parametrize(
    "make",
    [
        lambda: Interval(timedelta(seconds=59)),
        lambda: Interval(timedelta(minutes=1, microseconds=1)),
        lambda: Interval(HOUR, datetime(2030, 1, 1)),  # naive anchor
        lambda: Daily(time(9, tzinfo=UTC)),
        lambda: Daily(time(9, 0, 0, 5)),
        lambda: Weekly(7, time(9)),
        lambda: Weekly(-1, time(9)),
        lambda: Monthly(0, time(9)),
        lambda: Monthly(32, time(9)),
    ],
)
def test_rules_refuse_bad_values_when_built_directly(make: Callable[[], Any]) -> None:
    with pytest.raises(ValidationError):
        make()


def test_rules_refuse_naive_datetimes_and_answer_in_utc() -> None:
    with pytest.raises(ValidationError, match="time zone"):
        Daily(time(9)).next_after(datetime(2030, 1, 1))
    paris = timezone(timedelta(hours=1))
    nxt = Daily(time(9)).next_after(datetime(2030, 1, 1, 9, 30, tzinfo=paris))  # 08:30 UTC
    assert nxt == at(2030, 1, 1) and nxt.tzinfo is UTC


# ---- frequency rules: the occurrences --------------------------------------------------------


def test_monthly_on_day_31_is_clamped_and_comes_back() -> None:
    rule = Monthly(31, time(9))
    t = at(2023, 12, 31, 10)
    seen = []
    for _ in range(14):
        t = rule.next_after(t)
        seen.append(t.date())
    assert seen == [
        date(2024, 1, 31),
        date(2024, 2, 29),  # leap year
        date(2024, 3, 31),
        date(2024, 4, 30),
        date(2024, 5, 31),
        date(2024, 6, 30),
        date(2024, 7, 31),
        date(2024, 8, 31),
        date(2024, 9, 30),
        date(2024, 10, 31),
        date(2024, 11, 30),
        date(2024, 12, 31),
        date(2025, 1, 31),
        date(2025, 2, 28),
    ]


@pytest.mark.parametrize(
    ("year", "feb"), [(2024, 29), (2025, 28), (2000, 29), (2100, 28), (2400, 29)]
)
def test_monthly_on_day_29_to_31_follows_the_leap_year_rules(year: int, feb: int) -> None:
    for day in (29, 30, 31):
        occurrence = Monthly(day, time(0)).first_at_or_after(at(year, 2, 1, 0))
        assert occurrence.date() == date(year, 2, min(day, feb))


def test_an_occurrence_exactly_at_t_is_at_or_after_t_but_not_after_it() -> None:
    for r in (Daily(time(9)), Weekly(1, time(9)), Monthly(1, time(9)), Interval(DAY, T0)):
        occurrence = r.first_at_or_after(at(2030, 1, 1, 8))
        assert r.first_at_or_after(occurrence) == occurrence
        assert r.next_after(occurrence) > occurrence


def test_an_interval_counts_from_its_anchor() -> None:
    anchor = at(2030, 1, 1, 9, 17)
    rule = Interval(timedelta(minutes=90), anchor)
    assert rule.first_at_or_after(anchor - DAY) == anchor
    assert rule.next_after(anchor - DAY) == anchor
    assert rule.next_after(anchor) == anchor + timedelta(minutes=90)
    assert rule.first_at_or_after(anchor + timedelta(minutes=91)) == anchor + timedelta(minutes=180)
    assert rule.next_after(anchor + timedelta(minutes=180)) == anchor + timedelta(minutes=270)


INSTANTS = st.datetimes(
    min_value=datetime(1999, 1, 1),
    max_value=datetime(2200, 12, 31),
    timezones=st.just(UTC),
)
TIMES = st.builds(time, st.integers(0, 23), st.integers(0, 59), st.sampled_from([0, 0, 0, 30, 59]))
CALENDAR_RULES: st.SearchStrategy[Frequency] = st.one_of(
    st.builds(Daily, TIMES),
    st.builds(Weekly, st.integers(0, 6), TIMES),
    st.builds(Monthly, st.integers(1, 31) | st.sampled_from([28, 29, 30, 31]), TIMES),
)
INTERVALS = st.builds(
    Interval,
    st.integers(60, 90 * 86_400).map(lambda s: timedelta(seconds=s))
    | st.sampled_from([timedelta(minutes=1), HOUR, DAY, 7 * DAY]),
    INSTANTS,
)
RULES = CALENDAR_RULES | INTERVALS


def occurs_on(rule: Frequency, day: date) -> datetime | None:
    """An oracle written apart from the rules: the occurrence of a calendar rule on ``day``."""
    if isinstance(rule, Daily):
        return datetime.combine(day, rule.at, UTC)
    if isinstance(rule, Weekly):
        return datetime.combine(day, rule.at, UTC) if day.weekday() == rule.weekday else None
    assert isinstance(rule, Monthly)
    last = calendar.monthrange(day.year, day.month)[1]
    return datetime.combine(day, rule.at, UTC) if day.day == min(rule.day, last) else None


def oracle_next(rule: Frequency, t: datetime, *, strict: bool) -> datetime:
    if isinstance(rule, Interval):
        k = 0
        while rule.anchor + k * rule.every < t or (strict and rule.anchor + k * rule.every == t):
            # jump close, then walk: an independent ceiling
            k = max(k + 1, int((t - rule.anchor).total_seconds() // rule.every.total_seconds()))
        return rule.anchor + k * rule.every
    for offset in range(-1, 64):
        occurrence = occurs_on(rule, t.date() + timedelta(days=offset))
        if occurrence is not None and (occurrence > t or (occurrence == t and not strict)):
            return occurrence
    raise AssertionError("no occurrence within two months")


@given(rule=RULES, t=INSTANTS)
def test_rules_agree_with_the_calendar_oracle(rule: Frequency, t: datetime) -> None:
    assert rule.next_after(t) == oracle_next(rule, t, strict=True)
    assert rule.first_at_or_after(t) == oracle_next(rule, t, strict=False)


@given(rule=RULES, t=INSTANTS)
def test_occurrences_strictly_increase_with_none_skipped(rule: Frequency, t: datetime) -> None:
    first = rule.first_at_or_after(t)
    assert first >= t and first.tzinfo is UTC
    assert rule.first_at_or_after(first) == first  # an occurrence
    assert rule.next_after(t) == (first if first > t else rule.next_after(first))
    assert rule.next_after(t) == rule.first_at_or_after(t + timedelta(microseconds=1))
    previous = first
    for _ in range(30):
        nxt = rule.next_after(previous)
        assert nxt > previous
        assert rule.first_at_or_after(previous + timedelta(microseconds=1)) == nxt  # none between
        previous = nxt


@given(
    day=st.integers(1, 31),
    start_year=st.integers(1999, 2390),
    start_month=st.integers(1, 12),
    hh=st.integers(0, 23),
)
def test_monthly_runs_once_every_month_on_the_clamped_day(
    day: int, start_year: int, start_month: int, hh: int
) -> None:
    rule = Monthly(day, time(hh))
    t = rule.first_at_or_after(at(start_year, start_month, 1, 0))
    year, month = start_year, start_month
    for _ in range(60):  # five years: at least one leap year
        last = calendar.monthrange(year, month)[1]
        assert t == at(year, month, min(day, last), hh)
        t = rule.next_after(t)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


@given(rule=INTERVALS, t=INSTANTS)
def test_interval_occurrences_are_whole_steps_from_the_anchor(rule: Interval, t: datetime) -> None:
    first, nxt = rule.first_at_or_after(t), rule.next_after(t)
    for occurrence in (first, nxt):
        assert occurrence >= rule.anchor
        assert (occurrence - rule.anchor) % rule.every == timedelta(0)
    # and the step before each is not at or after (first) / after (next) t
    assert first == rule.anchor or first - rule.every < t
    assert nxt == rule.anchor or nxt - rule.every <= t


@given(rule=RULES)
def test_every_rule_round_trips_through_its_dict(rule: Frequency) -> None:
    anchor = rule.anchor if isinstance(rule, Interval) else EPOCH
    assert parse_frequency(rule.to_dict(), anchor=anchor) == rule


# ---- creating a schedule ----------------------------------------------------------------


def test_create_records_the_schedule_and_its_first_occurrence() -> None:
    s = new_schedule(
        {"type": "monthly", "day": 31, "at": "09:00"},
        max_occurrences=12,
        ends_at=at(2031, 6, 1),
        catch_up=CATCH_UP_ALL,
        ctx=ctx(corr="corr-9", cause="cause-9"),
    )
    [created] = s.collect_events()
    assert isinstance(created, ScheduledPayment.Created)
    assert (created.merchant_id, created.wallet_id, created.amount, created.currency) == (
        "acme",
        "w-1",
        1_000,
        "USD",
    )
    assert created.frequency == {"type": "monthly", "day": 31, "at": "09:00"}
    assert (created.starts_at, created.ends_at, created.max_occurrences) == (
        T0,
        at(2031, 6, 1),
        12,
    )
    assert (created.catch_up, created.metadata, created.method) == (
        CATCH_UP_ALL,
        {"plan": "gold"},
        CARD,
    )
    assert (created.correlation_id, created.causation_id, created.timestamp) == (
        "corr-9",
        "cause-9",
        T0,
    )
    assert created.next_due_at == at(2030, 1, 31)
    assert (s.status, s.next_number, s.next_due_at) == (ACTIVE, 1, at(2030, 1, 31))
    assert s.rule == Monthly(31, time(9))
    assert s.money(s.amount) == usd(1_000)


def test_the_frequency_is_stored_in_its_canonical_form() -> None:
    s = new_schedule({"type": "weekly", "weekday": "WEDNESDAY", "at": "07:05:00"})
    assert s.frequency == {"type": "weekly", "weekday": "wednesday", "at": "07:05"}
    assert s.next_due_at == at(2030, 1, 2, 7, 5)


def test_nothing_is_charged_for_the_past() -> None:
    """A start in the past: the first occurrence is the first at or after creation (an
    interval stays anchored at the start)."""
    s = new_schedule({"type": "interval", "every_seconds": 3600}, starts_at=at(2029, 12, 1, 0, 20))
    assert s.next_due_at == at(2030, 1, 1, 12, 20)
    assert s.due(T0) == []


def test_an_interval_schedule_runs_at_its_start_then_every_step() -> None:
    start = at(2030, 1, 2, 9, 17)
    s = new_schedule({"type": "interval", "every_seconds": 5400}, starts_at=start)
    assert s.next_due_at == start
    for k in range(5):
        [(number, due_at, action)] = run_pass(s, start + k * timedelta(minutes=90))
        assert (number, due_at, action) == (k + 1, start + k * timedelta(minutes=90), RUN)


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        ({"merchant_id": ""}, ValidationError),
        ({"wallet_id": ""}, ValidationError),
        ({"amount": usd(0)}, InvalidAmount),
        ({"amount": usd(-5)}, InvalidAmount),
        ({"method": "cash"}, ValidationError),
        ({"payment_method_token": ""}, ValidationError),
        ({"payment_method_token": "t" * 256}, ValidationError),
        ({"frequency": {"type": "hourly"}}, InvalidFrequency),
        ({"starts_at": datetime(2030, 1, 1)}, ValidationError),
        ({"ends_at": T0 - DAY}, ValidationError),
        ({"ends_at": at(2030, 1, 2, 8, 59)}, ValidationError),  # before the first occurrence
        ({"max_occurrences": 0}, ValidationError),
        ({"max_occurrences": True}, ValidationError),
        ({"max_occurrences": 2.0}, ValidationError),
        ({"catch_up": "some"}, ValidationError),
        ({"metadata": ["x"]}, ValidationError),
    ],
)
def test_create_refuses_bad_input(kw: dict[str, Any], error: type[LedgerError]) -> None:
    with pytest.raises(LedgerError) as info:
        new_schedule(**kw)
    assert type(info.value) is error, info.value


def test_every_method_is_accepted() -> None:
    for method in METHODS:
        assert new_schedule(method=method).method == method


@pytest.mark.parametrize(
    ("kw", "path"),
    [
        ({"payment_method_token": PAN}, "payment_method_token"),
        ({"payment_method_token": "tok 4242 4242 4242 4242"}, "payment_method_token"),
        ({"metadata": {"note": f"card {PAN}"}}, "metadata.note"),
        ({"metadata": {"cards": [int(PAN)]}}, "metadata.cards[0]"),
    ],
)
def test_card_numbers_are_refused_by_path_and_never_echoed(kw: dict[str, Any], path: str) -> None:
    with pytest.raises(CardNumberRejected) as info:
        new_schedule(**kw)
    assert path in info.value.detail and PAN not in info.value.detail
    assert "4242 4242" not in info.value.detail


# ---- catch-up after downtime ----------------------------------------------------------------


def test_latest_runs_only_the_most_recent_overdue_occurrence() -> None:
    s = new_schedule(catch_up=CATCH_UP_LATEST)
    s.collect_events()
    now = at(2030, 1, 6, 10)  # down since before Jan 2 09:00: five overdue
    plan = run_pass(s, now)
    assert [(n, d.date().day, a) for n, d, a in plan] == [
        (1, 2, SKIP),
        (2, 3, SKIP),
        (3, 4, SKIP),
        (4, 5, SKIP),
        (5, 6, RUN),
    ]
    events = s.collect_events()
    assert [type(e).__name__ for e in events] == ["OccurrenceSkipped"] * 4 + ["OccurrenceStarted"]
    assert all(e.reason == SKIP_MISSED for e in events[:4])
    assert events[4].payment_id == str(occurrence_payment_id(s.id, 5))
    assert (s.next_number, s.next_due_at, s.started_count, s.skipped_count) == (
        6,
        at(2030, 1, 7),
        1,
        4,
    )
    assert s.last_payment_id == events[4].payment_id
    assert s.due(now) == []


def test_all_runs_every_overdue_occurrence_ten_per_pass() -> None:
    s = new_schedule(catch_up=CATCH_UP_ALL)
    s.collect_events()
    now = at(2030, 1, 26, 10)  # 25 overdue
    passes = [run_pass(s, now) for _ in range(4)]
    assert [len(p) for p in passes] == [10, 10, 5, 0]
    numbers = [n for p in passes for n, _, a in p if a == RUN]
    assert numbers == list(range(1, 26))
    assert s.started_count == 25 and s.skipped_count == 0
    assert s.next_due_at == at(2030, 1, 27)


def test_none_runs_only_within_the_grace_period() -> None:
    s = new_schedule(catch_up=CATCH_UP_NONE)
    late = at(2030, 1, 6) + CATCH_UP_GRACE  # exactly at the end of the grace of Jan 6
    assert [a for _, _, a in s.due(late)] == [SKIP] * 4 + [RUN]
    assert [a for _, _, a in s.due(late + timedelta(seconds=1))] == [SKIP] * 5
    run_pass(s, late + timedelta(seconds=1))
    assert s.started_count == 0 and s.skipped_count == 5
    assert s.due(at(2030, 1, 7, 9, 30)) == [DueOccurrence(6, at(2030, 1, 7), RUN)]


def test_none_runs_each_occurrence_within_grace_even_several() -> None:
    s = new_schedule({"type": "interval", "every_seconds": 900}, starts_at=at(2030, 1, 2, 9))
    s.update(ctx(), catch_up=CATCH_UP_NONE)
    plan = s.due(at(2030, 1, 2, 11))  # 09:00 .. 11:00 every 15 minutes
    assert [a for _, _, a in plan] == [SKIP] * 4 + [RUN] * 5  # 09:00-09:45: over an hour late


def test_a_long_downtime_of_a_per_minute_schedule_is_caught_up_in_bounded_passes() -> None:
    s = new_schedule({"type": "interval", "every_seconds": 60}, starts_at=at(2030, 1, 2, 0))
    s.collect_events()
    now = at(2030, 1, 2, 5, 0)  # 301 overdue (00:00 .. 05:00)
    sizes = []
    while plan := run_pass(s, now):
        sizes.append(len(plan))
        assert len(plan) <= MAX_PLAN
    assert sizes == [MAX_PLAN, MAX_PLAN, MAX_PLAN, 1]
    events = s.collect_events()
    assert len(events) == 301
    assert [e.number for e in events] == list(range(1, 302))
    assert isinstance(events[-1], ScheduledPayment.OccurrenceStarted)
    assert events[-1].due_at == now


def test_all_is_bounded_by_runs_and_none_by_the_plan_size() -> None:
    s = new_schedule({"type": "interval", "every_seconds": 60}, starts_at=at(2030, 1, 2, 0))
    assert len(s.due(at(2030, 1, 3))) == MAX_PLAN  # latest: only skips first
    s.update(ctx(), catch_up=CATCH_UP_ALL)
    assert len(s.due(at(2030, 1, 3))) == MAX_RUNS_PER_PASS


# ---- the guards that make each occurrence run once -------------------------------------


def test_a_repeated_occurrence_is_refused() -> None:
    s = new_schedule()
    due = at(2030, 1, 2)
    s.start_occurrence(1, due, "p-1", ctx(now=due))
    error = assert_refused(
        OccurrenceAlreadyHandled, s, lambda: s.start_occurrence(1, due, "p-1", ctx(now=due))
    )
    assert error.code == "occurrence-already-handled" and error.status == 409
    assert_refused(
        OccurrenceAlreadyHandled, s, lambda: s.skip_occurrence(1, due, SKIP_MISSED, ctx(now=due))
    )


def test_an_occurrence_out_of_order_or_with_another_due_time_is_refused() -> None:
    s = new_schedule()
    now = at(2030, 1, 5, 10)
    assert_refused(
        OccurrenceOutOfOrder, s, lambda: s.start_occurrence(2, at(2030, 1, 3), "p", ctx(now=now))
    )
    assert_refused(
        OccurrenceOutOfOrder, s, lambda: s.skip_occurrence(3, at(2030, 1, 4), "x", ctx(now=now))
    )
    assert_refused(  # the next due time under another number
        OccurrenceOutOfOrder, s, lambda: s.start_occurrence(2, at(2030, 1, 2), "p", ctx(now=now))
    )
    assert_refused(
        OccurrenceOutOfOrder,
        s,
        lambda: s.start_occurrence(1, at(2030, 1, 2, 9, 1), "p", ctx(now=now)),
    )


def test_an_occurrence_runs_only_once_due() -> None:
    s = new_schedule()
    due = at(2030, 1, 2)
    assert s.due(due - timedelta(microseconds=1)) == []
    assert_refused(
        OccurrenceNotDue,
        s,
        lambda: s.start_occurrence(1, due, "p", ctx(now=due - timedelta(microseconds=1))),
    )
    s.start_occurrence(1, due, "p", ctx(now=due))
    assert s.next_number == 2


def test_an_occurrence_the_policy_skips_cannot_be_run() -> None:
    s = new_schedule()  # latest
    now = at(2030, 1, 3, 10)
    assert_refused(
        OccurrenceMissed, s, lambda: s.start_occurrence(1, at(2030, 1, 2), "p", ctx(now=now))
    )
    s.skip_occurrence(1, at(2030, 1, 2), SKIP_MISSED, ctx(now=now))
    s.start_occurrence(2, at(2030, 1, 3), "p", ctx(now=now))
    assert s.update(ctx(now=now), catch_up=CATCH_UP_NONE)
    late = at(2030, 1, 4) + CATCH_UP_GRACE + timedelta(seconds=1)
    assert_refused(
        OccurrenceMissed, s, lambda: s.start_occurrence(3, at(2030, 1, 4), "p", ctx(now=late))
    )


def test_the_merchant_may_skip_the_next_occurrence_ahead_of_time() -> None:
    s = new_schedule()
    s.skip_occurrence(1, at(2030, 1, 2), SKIP_REQUESTED, ctx())
    assert (s.next_number, s.next_due_at) == (2, at(2030, 1, 3))
    assert s.due(at(2030, 1, 2, 23)) == []


@pytest.mark.parametrize("reason", ["", "r" * 101, None])
def test_a_skip_needs_a_reason(reason: Any) -> None:
    s = new_schedule()
    assert_refused(ValidationError, s, lambda: s.skip_occurrence(1, at(2030, 1, 2), reason, ctx()))


def test_start_needs_a_payment_id_and_a_real_occurrence_number() -> None:
    s = new_schedule()
    due = at(2030, 1, 2)
    assert_refused(ValidationError, s, lambda: s.start_occurrence(1, due, "", ctx(now=due)))
    assert_refused(ValidationError, s, lambda: s.start_occurrence(0, due, "p", ctx(now=due)))
    assert_refused(ValidationError, s, lambda: s.start_occurrence(True, due, "p", ctx(now=due)))
    assert_refused(
        ValidationError,
        s,
        lambda: s.start_occurrence(1, datetime(2030, 1, 2, 9), "p", ctx(now=due)),
    )


def test_two_schedulers_racing_on_copies_keep_one_outcome() -> None:
    """Both load the same version and handle the same occurrence: the event store keeps the
    first save (the other conflicts on the version); the loser, reloading, is refused."""
    s = new_schedule()
    store = list(s.collect_events())
    now = at(2030, 1, 2, 9, 5)
    a, b = replay(store), replay(store)
    assert run_pass(a, now) == run_pass(b, now) == [DueOccurrence(1, at(2030, 1, 2), RUN)]
    won, lost = a.collect_events(), b.collect_events()
    assert won[0].originator_version == lost[0].originator_version == len(store) + 1
    store.extend(won)  # the store's unique (id, version) turns the second save away
    again = replay(store)
    assert_refused(
        OccurrenceAlreadyHandled,
        again,
        lambda: again.start_occurrence(1, at(2030, 1, 2), "p-b", ctx(now=now)),
    )
    assert again.due(now) == []


# ---- the end of a schedule -----------------------------------------------------------------


def test_max_occurrences_completes_the_schedule_and_skips_count() -> None:
    s = new_schedule(max_occurrences=3)
    s.skip_occurrence(1, at(2030, 1, 2), SKIP_REQUESTED, ctx())
    run_pass(s, at(2030, 1, 3, 9))
    assert s.status == ACTIVE
    run_pass(s, at(2030, 1, 4, 9))
    assert (s.status, s.next_number, s.next_due_at) == (COMPLETED, 4, None)
    assert s.due(at(2031, 1, 1)) == []
    assert_refused(ScheduleNotActive, s, lambda: s.start_occurrence(4, at(2030, 1, 5), "p", ctx()))
    assert_refused(
        OccurrenceAlreadyHandled, s, lambda: s.start_occurrence(3, at(2030, 1, 4), "p", ctx())
    )
    assert_refused(ScheduleNotActive, s, lambda: s.cancel(ctx()))
    assert_refused(ScheduleNotActive, s, lambda: s.update(ctx(), amount=usd(5)))


def test_ends_at_is_inclusive_and_completes_the_schedule() -> None:
    s = new_schedule(ends_at=at(2030, 1, 4))
    plan = run_pass(s, at(2030, 1, 10))  # latest after downtime: the last one before the end
    assert [(n, a) for n, _, a in plan] == [(1, SKIP), (2, SKIP), (3, RUN)]
    assert plan[-1].due_at == at(2030, 1, 4)
    assert (s.status, s.next_due_at) == (COMPLETED, None)


def test_all_after_the_end_runs_only_occurrences_before_it() -> None:
    s = new_schedule(ends_at=at(2030, 1, 4, 8), catch_up=CATCH_UP_ALL)
    plan = run_pass(s, at(2030, 2, 1))
    assert [(n, a) for n, _, a in plan] == [(1, RUN), (2, RUN)]
    assert s.status == COMPLETED


# ---- update and cancel -------------------------------------------------------------------


def test_update_changes_the_amount_and_keeps_the_next_due() -> None:
    s = new_schedule()
    s.collect_events()
    assert s.update(ctx(corr="u"), amount=usd(2_500), metadata={"plan": "platinum"})
    [e] = s.collect_events()
    assert isinstance(e, ScheduledPayment.Updated)
    assert e.changed == ["amount", "metadata"] and e.correlation_id == "u"
    assert (e.amount, e.metadata, e.next_due_at) == (2_500, {"plan": "platinum"}, at(2030, 1, 2))
    assert (s.amount, s.next_due_at, s.next_number) == (2_500, at(2030, 1, 2), 1)


def test_an_update_that_changes_nothing_records_nothing() -> None:
    s = new_schedule()
    s.collect_events()
    assert not s.update(
        ctx(),
        amount=usd(1_000),
        frequency=dict(DAILY_9),
        ends_at=None,
        max_occurrences=None,
        catch_up=CATCH_UP_LATEST,
        metadata={"plan": "gold"},
        payment_method_token="tok_visa_abc123",
    )
    assert s.pending_events == []


def test_a_new_frequency_takes_effect_from_now() -> None:
    s = new_schedule()
    run_pass(s, at(2030, 1, 2, 9))
    now = at(2030, 1, 10, 12)
    assert s.update(ctx(now=now), frequency={"type": "monthly", "day": 31, "at": "06:00"})
    assert (s.next_number, s.next_due_at) == (2, at(2030, 1, 31, 6))
    assert s.rule == Monthly(31, time(6))
    assert s.due(now) == []  # the old rule's overdue Jan 3..10 are gone, not caught up


def test_a_new_frequency_never_goes_back_before_the_last_occurrence() -> None:
    s = new_schedule()
    s.skip_occurrence(1, at(2030, 1, 2), SKIP_REQUESTED, ctx())  # ahead of time, at T0
    s.update(ctx(), frequency={"type": "daily", "at": "08:00"})
    assert s.next_due_at == at(2030, 1, 3, 8)  # not Jan 2 08:00, before the skipped 09:00


def test_a_new_interval_stays_anchored_at_the_start() -> None:
    start = at(2030, 1, 2, 9, 17)
    s = new_schedule({"type": "interval", "every_seconds": 3600}, starts_at=start)
    s.update(ctx(now=at(2030, 1, 5, 10)), frequency={"type": "interval", "every_seconds": 86400})
    assert s.next_due_at == at(2030, 1, 5, 9, 17) + DAY
    assert s.rule == Interval(DAY, start)


def test_an_update_that_leaves_no_occurrence_completes_the_schedule() -> None:
    s = new_schedule()
    run_pass(s, at(2030, 1, 3, 9))
    assert s.next_number == 3 and s.started_count == 1
    assert_refused(ValidationError, s, lambda: s.update(ctx(), max_occurrences=1))
    s.update(ctx(), ends_at=at(2030, 1, 4), max_occurrences=5)
    assert (s.status, s.next_due_at) == (ACTIVE, at(2030, 1, 4))  # the end is inclusive
    s.update(ctx(), max_occurrences=2)
    assert (s.status, s.next_due_at) == (COMPLETED, None)


def test_update_back_to_no_end() -> None:
    s = new_schedule(ends_at=at(2030, 3, 1))
    s.update(ctx(), ends_at=None)
    assert s.ends_at is None
    s.update(ctx(), max_occurrences=UNCHANGED, ends_at=UNCHANGED, catch_up=CATCH_UP_ALL)
    assert s.ends_at is None and s.catch_up == CATCH_UP_ALL


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        ({"amount": Money.of(1_000, "EUR")}, CurrencyMismatch),
        ({"amount": usd(0)}, InvalidAmount),
        ({"frequency": {"type": "daily", "at": "25:00"}}, InvalidFrequency),
        ({"ends_at": T0 - timedelta(seconds=1)}, ValidationError),
        ({"ends_at": datetime(2031, 1, 1)}, ValidationError),
        ({"max_occurrences": 0}, ValidationError),
        ({"catch_up": "most"}, ValidationError),
        ({"metadata": {"pan": PAN}}, CardNumberRejected),
        ({"payment_method_token": PAN}, CardNumberRejected),
        ({"payment_method_token": ""}, ValidationError),
    ],
)
def test_update_refuses_bad_input(kw: dict[str, Any], error: type[LedgerError]) -> None:
    s = new_schedule()
    assert_refused(error, s, lambda: s.update(ctx(), **kw))


def test_cancel_stops_the_schedule_for_good() -> None:
    s = new_schedule()
    run_pass(s, at(2030, 1, 2, 9))
    s.cancel(ctx(now=at(2030, 1, 2, 12)))
    assert (s.status, s.next_due_at, s.next_number) == (CANCELED, None, 2)
    assert s.due(at(2031, 1, 1)) == []
    assert_refused(ScheduleNotActive, s, lambda: s.cancel(ctx()))
    assert_refused(ScheduleNotActive, s, lambda: s.start_occurrence(2, at(2030, 1, 3), "p", ctx()))
    assert_refused(ScheduleNotActive, s, lambda: s.skip_occurrence(2, at(2030, 1, 3), "x", ctx()))
    assert_refused(ScheduleNotActive, s, lambda: s.update(ctx(), amount=usd(1)))
    assert_refused(
        OccurrenceAlreadyHandled, s, lambda: s.start_occurrence(1, at(2030, 1, 2), "p", ctx())
    )


# ---- events: replay and storage ------------------------------------------------------------


def every_kind_of_event() -> tuple[ScheduledPayment, list[Any]]:
    s = new_schedule({"type": "weekly", "weekday": "friday", "at": "10:30"}, ends_at=at(2031, 1, 1))
    run_pass(s, at(2030, 1, 4, 10, 30))
    s.skip_occurrence(2, at(2030, 1, 11, 10, 30), SKIP_REQUESTED, ctx(now=at(2030, 1, 5)))
    s.update(ctx(now=at(2030, 1, 6)), amount=usd(700), frequency={"type": "daily", "at": "07:00"})
    run_pass(s, at(2030, 1, 30, 8))
    s.update(ctx(now=at(2030, 1, 30, 9)), ends_at=None, max_occurrences=40)
    s.cancel(ctx(now=at(2030, 2, 1)), reason="customer left")
    return s, list(s.collect_events())


def test_replaying_the_events_rebuilds_the_schedule() -> None:
    s, events = every_kind_of_event()
    assert state(replay(events)) == state(s)
    for k in range(1, len(events)):  # and every state on the way
        assert replay(events[:k]).version == k
    kinds = {type(e) for e in events}
    assert kinds == {
        v
        for v in vars(ScheduledPayment).values()
        if isinstance(v, type)
        and issubclass(v, ScheduledPayment.Event)
        and v is not ScheduledPayment.Event
    }


class TypedScheduleTranscoder(OrjsonTranscoder):
    """The event store's transcoder, also typing the schedule's datetime fields back."""

    def decode(self, data: bytes) -> Any:
        state = super().decode(data)
        for key in DATETIME_FIELDS & state.keys():
            if isinstance(state[key], str):
                state[key] = datetime.fromisoformat(state[key])
        return state


def test_the_events_survive_the_event_stores_encoding() -> None:
    """Through the event store's transcoder as it is (schedule datetimes come back as
    strings) the events still rebuild the same schedule; once it types DATETIME_FIELDS,
    the decoded events equal the originals."""
    s, events = every_kind_of_event()
    plain: Mapper[UUID] = Mapper(transcoder=OrjsonTranscoder())
    decoded = [plain.to_domain_event(plain.to_stored_event(e)) for e in events]
    assert state(replay(decoded)) == state(s)
    typed: Mapper[UUID] = Mapper(transcoder=TypedScheduleTranscoder())
    decoded = [typed.to_domain_event(typed.to_stored_event(e)) for e in events]
    assert decoded == events
    assert state(replay(decoded)) == state(s)


def test_datetime_fields_names_every_datetime_field_of_the_events() -> None:
    found = set()
    for v in vars(ScheduledPayment).values():
        if isinstance(v, type) and issubclass(v, ScheduledPayment.Event):
            for klass in v.__mro__:
                for name, hint in getattr(klass, "__annotations__", {}).items():
                    if "datetime" in str(hint) and name != "timestamp":
                        found.add(name)
    assert found == DATETIME_FIELDS


def test_every_event_carries_the_command_ids_and_time() -> None:
    s = new_schedule(ctx=ctx(corr="c0", cause="k0"))
    steps: list[Callable[[CommandContext], Any]] = [
        lambda c: s.start_occurrence(1, at(2030, 1, 2), "p", c),
        lambda c: s.skip_occurrence(2, at(2030, 1, 3), SKIP_REQUESTED, c),
        lambda c: s.update(c, amount=usd(3)),
        lambda c: s.cancel(c),
    ]
    for i, step in enumerate(steps, start=1):
        step(ctx(now=at(2030, 1, 2, 9, i), corr=f"c{i}", cause=f"k{i}"))
    for i, e in enumerate(s.collect_events()):
        assert (e.correlation_id, e.causation_id) == (f"c{i}", f"k{i}")
        assert e.timestamp == (T0 if i == 0 else at(2030, 1, 2, 9, i))


# ---- occurrence payments ---------------------------------------------------------------


def test_occurrence_payment_keys_are_deterministic_and_distinct() -> None:
    a, b = UUID(int=1), UUID(int=2)
    assert occurrence_payment_key(a, 1) == occurrence_payment_key(str(a), 1)
    assert occurrence_payment_key(a, 1) == f"scheduled-payment:{a}:1"
    keys = {occurrence_payment_key(x, n) for x in (a, b) for n in (1, 2, 10, 11)}
    assert len(keys) == 8
    assert occurrence_payment_id(a, 1) == occurrence_payment_id(str(a), 1)
    # A stored contract: the payment of an occurrence keeps its id across releases.
    assert occurrence_payment_id(a, 1) == UUID("27f3f5af-db82-5b85-8081-ac396be0464b")
    for bad in (0, -1, True, 1.0):
        with pytest.raises(ValidationError):
            occurrence_payment_key(a, bad)  # type: ignore[arg-type]


def test_error_codes_are_stable() -> None:
    assert {
        e: (e.code, e.status)
        for e in (
            InvalidFrequency,
            ScheduleStateError,
            ScheduleNotActive,
            OccurrenceAlreadyHandled,
            OccurrenceOutOfOrder,
            OccurrenceNotDue,
            OccurrenceMissed,
        )
    } == {
        InvalidFrequency: ("invalid-frequency", 422),
        ScheduleStateError: ("schedule-state", 409),
        ScheduleNotActive: ("schedule-not-active", 409),
        OccurrenceAlreadyHandled: ("occurrence-already-handled", 409),
        OccurrenceOutOfOrder: ("occurrence-out-of-order", 409),
        OccurrenceNotDue: ("occurrence-not-due", 409),
        OccurrenceMissed: ("occurrence-missed", 409),
    }


# ---- property: two schedulers racing, restarts, merchant changes ---------------------------

# The per-minute interval's long downtimes are tested above; here they would make the walk
# write tens of thousands of events.
FREQUENCIES = [
    {"type": "interval", "every_seconds": 3600},
    {"type": "interval", "every_seconds": 86400 + 420},
    {"type": "daily", "at": "09:00"},
    {"type": "weekly", "weekday": "sunday", "at": "23:30"},
    {"type": "monthly", "day": 31, "at": "00:00"},
    {"type": "monthly", "day": 29, "at": "12:00"},
]
ADVANCES = st.sampled_from([0, 1, 59, 60, 61, 90, 1_440, 3 * 1_440, 40 * 1_440]) | st.integers(
    0, 10 * 1_440
)


class RacingSchedulers(RuleBasedStateMachine):
    """One schedule in a simulated event store (its event list; a save is accepted only if
    its first event's version follows the stored ones), two scheduler processes A and B
    that read it, sometimes act on a stale copy, race, crash before saving and retry, and a
    merchant who updates, skips and cancels. Whatever happens, each occurrence number is
    started or skipped exactly once, in order, and only by what the policy allows."""

    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.store: list[Any] = []
        self.views: dict[str, ScheduledPayment | None] = {"A": None, "B": None}
        self.plans: dict[str, list[DueOccurrence]] = {"A": [], "B": []}
        self.steps = 0

    def ctx(self) -> CommandContext:
        self.steps += 1
        return ctx(now=self.now, corr=f"c{self.steps}", cause=f"k{self.steps}")

    def load(self) -> ScheduledPayment:
        return replay(self.store)

    def save(self, s: ScheduledPayment) -> bool:
        """The event store's optimistic concurrency: the first new event must be the next
        version, or nothing is written."""
        new = list(s.collect_events())
        if not new:
            return True
        if new[0].originator_version != len(self.store) + 1:
            event("save: version conflict")
            return False
        self.store.extend(new)
        return True

    def apply(self, s: ScheduledPayment, plan: list[DueOccurrence]) -> LedgerError | None:
        """A scheduler's command: handle the plan's occurrences in order, stop at a refusal."""
        c = self.ctx()
        for number, due_at, action in plan:
            try:
                if action == RUN:
                    s.start_occurrence(number, due_at, occurrence_payment_id(s.id, number), c)
                else:
                    s.skip_occurrence(number, due_at, SKIP_MISSED, c)
            except (OccurrenceAlreadyHandled, OccurrenceOutOfOrder, OccurrenceMissed) as exc:
                event(f"refused: {exc.code}")
                return exc
            except ScheduleNotActive as exc:
                event(f"refused: {exc.code}")
                return exc
        return None

    @initialize(
        frequency=st.sampled_from(FREQUENCIES),
        catch_up=st.sampled_from(CATCH_UP_POLICIES),
        max_occurrences=st.none() | st.integers(1, 40),
        ends_in_days=st.none() | st.integers(1, 200),
        starts_in_minutes=st.integers(-3 * 1_440, 3 * 1_440),
    )
    def create(
        self,
        frequency: dict[str, Any],
        catch_up: str,
        max_occurrences: int | None,
        ends_in_days: int | None,
        starts_in_minutes: int,
    ) -> None:
        starts_at = T0 + timedelta(minutes=starts_in_minutes)
        try:
            s = new_schedule(
                frequency,
                catch_up=catch_up,
                max_occurrences=max_occurrences,
                starts_at=starts_at,
                ends_at=None if ends_in_days is None else starts_at + ends_in_days * DAY,
            )
        except ValidationError:  # no occurrence before the end: create a plain one
            s = new_schedule(frequency, catch_up=catch_up)
        self.save(s)

    @rule(minutes=ADVANCES)
    def time_passes(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)

    @rule(who=st.sampled_from("AB"))
    def scheduler_reads(self, who: str) -> None:
        """A scheduler reads the schedule and plans; it may act on this much later."""
        view = self.views[who] = self.load()
        self.plans[who] = view.due(self.now)

    @rule(who=st.sampled_from("AB"), stale=st.booleans())
    def scheduler_pass(self, who: str, stale: bool) -> None:
        """A pass on a fresh read, or on the copy read earlier (a slow process): a stale
        copy's save conflicts when the other got there first."""
        view = self.views[who]
        s = copy.deepcopy(view) if stale and view is not None else self.load()
        plan = s.due(self.now)
        assert self.apply(s, plan) is None  # its own plan, on its own copy: always accepted
        self.save(s)

    @rule(who=st.sampled_from("AB"))
    def scheduler_acts_on_an_old_plan(self, who: str) -> None:
        """After a restart, a scheduler submits what it planned before, as commands that
        load the schedule afresh: the guards refuse what is no longer next."""
        s = self.load()
        self.apply(s, self.plans[who])
        assert self.save(s)
        self.plans[who] = []

    @rule(
        who=st.sampled_from("AB"),
        minutes=st.sampled_from([0, 30, 61, 1_440, 3 * 1_440]),
        meanwhile=st.sampled_from(["nothing", "other pass", "new frequency", "skip"]),
    )
    def scheduler_stalls(self, who: str, minutes: int, meanwhile: str) -> None:
        """A scheduler plans, stalls (GC pause, lost lease) while time passes and something
        else happens, then submits its plan: it lands only where it is still right."""
        plan = self.load().due(self.now)
        self.now += timedelta(minutes=minutes)
        if meanwhile == "other pass":
            self.scheduler_pass("B" if who == "A" else "A", stale=False)
        elif meanwhile == "new frequency":
            self.merchant_updates(FREQUENCIES[minutes % len(FREQUENCIES)], None, None, None)
        elif meanwhile == "skip":
            self.merchant_skips_the_next()
        s = self.load()
        refused = self.apply(s, plan)
        if plan and meanwhile != "nothing" and s.pending_events == []:
            assert refused is not None
        assert self.save(s)

    @rule(first=st.sampled_from("AB"))
    def race(self, first: str) -> None:
        """A and B read the same version at once and both handle what is due."""
        a, b = self.load(), self.load()
        plan = a.due(self.now)
        assert b.due(self.now) == plan
        assert self.apply(a, plan) is None and self.apply(b, plan) is None
        winner, loser = (a, b) if first == "A" else (b, a)
        assert self.save(winner)
        if plan:
            assert not self.save(loser)  # the second save is refused as a whole
            retry = self.load()  # the loser retries with a fresh read
            refused = self.apply(retry, plan)
            assert isinstance(refused, OccurrenceAlreadyHandled)
            assert retry.pending_events == []
        else:
            assert self.save(loser)

    @rule(who=st.sampled_from("AB"))
    def scheduler_crashes_before_saving(self, who: str) -> None:
        s = self.load()
        self.apply(s, s.due(self.now))
        # lost: nothing saved, the next pass does it again

    @rule(
        frequency=st.none() | st.sampled_from(FREQUENCIES),
        amount=st.none() | st.integers(1, 5_000),
        catch_up=st.none() | st.sampled_from(CATCH_UP_POLICIES),
        max_more=st.none() | st.integers(0, 20),
    )
    def merchant_updates(
        self,
        frequency: dict[str, Any] | None,
        amount: int | None,
        catch_up: str | None,
        max_more: int | None,
    ) -> None:
        s = self.load()
        if not s.is_active:
            return
        limit = UNCHANGED if max_more is None else s.next_number - 1 + max_more
        if limit == 0:
            limit = 1
        try:
            s.update(
                self.ctx(),
                frequency=frequency,
                amount=None if amount is None else usd(amount),
                catch_up=catch_up,
                max_occurrences=limit,
            )
        except ValidationError:
            assert s.pending_events == []
            return
        self.save(s)

    @rule()
    def merchant_skips_the_next(self) -> None:
        s = self.load()
        if s.is_active and s.next_due_at is not None:
            s.skip_occurrence(s.next_number, s.next_due_at, SKIP_REQUESTED, self.ctx())
            self.save(s)

    @rule(go=st.integers(0, 9))
    def merchant_cancels(self, go: int) -> None:
        s = self.load()
        if go == 0 and s.is_active:
            s.cancel(self.ctx())
            assert self.save(s)

    @rule()
    def scheduler_drains(self) -> None:
        """Passes until nothing is due: then the next occurrence lies in the future."""
        s = self.load()
        while plan := s.due(self.now):
            assert self.apply(s, plan) is None
            assert self.save(s)
        s = self.load()
        assert s.due(self.now) == []
        assert s.next_due_at is None or s.next_due_at > self.now

    def teardown(self) -> None:
        if self.store:
            s = self.load()
            event(f"ends {s.status} after {s.next_number - 1} occurrences")

    # ---- invariants ----

    @invariant()
    def each_occurrence_is_handled_exactly_once_in_order(self) -> None:
        occurrences = handled(self.store)
        assert [e.number for e in occurrences] == list(range(1, len(occurrences) + 1))
        due = [e.due_at for e in occurrences]
        assert due == sorted(due) and len(set(due)) == len(due)  # strictly increasing
        started = [e for e in occurrences if isinstance(e, ScheduledPayment.OccurrenceStarted)]
        assert len({e.payment_id for e in started}) == len(started)
        for e in started:
            assert e.due_at <= e.timestamp  # never early
            assert e.payment_id == str(occurrence_payment_id(e.originator_id, e.number))

    @invariant()
    def runs_follow_the_catch_up_policy(self) -> None:
        if not self.store:
            return
        s: Any = None
        for e in self.store:
            if isinstance(e, ScheduledPayment.OccurrenceStarted):
                following = s.following(e.number, e.due_at)
                if s.catch_up == CATCH_UP_LATEST:
                    assert following is None or following > e.timestamp
                elif s.catch_up == CATCH_UP_NONE:
                    assert e.timestamp - e.due_at <= CATCH_UP_GRACE
            s = e.mutate(s)

    @invariant()
    def the_schedule_is_consistent(self) -> None:
        if not self.store:
            return
        s = self.load()
        occurrences = handled(self.store)
        assert s.started_count + s.skipped_count == s.next_number - 1 == len(occurrences)
        assert (s.next_due_at is None) == (s.status != ACTIVE)
        if s.max_occurrences is not None:
            assert s.next_number - 1 <= s.max_occurrences
        if s.ends_at is not None:
            assert all(e.due_at <= s.ends_at for e in occurrences)
            assert s.next_due_at is None or s.next_due_at <= s.ends_at
        if s.next_due_at is not None and s.last_due_at is not None:
            assert s.next_due_at > s.last_due_at
        canceled = any(isinstance(e, ScheduledPayment.Canceled) for e in self.store)
        assert (s.status == CANCELED) == canceled


TestRacingSchedulers = RacingSchedulers.TestCase
TestRacingSchedulers.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)
