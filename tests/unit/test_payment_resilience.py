"""Circuit breakers, retry policy and routing of the payment engine: pure and deterministic,
with an injected clock and random source."""

from __future__ import annotations

import random
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commands.payments.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerBoard,
    BreakerConfig,
    CircuitBreaker,
    is_failure,
    p99,
)
from commands.payments.ports import CallOutcome
from commands.payments.retry import RetryPolicy
from commands.payments.routing import (
    COST,
    PREFERENCE,
    SKIP_BREAKER_OPEN,
    SKIP_EXCLUDED,
    SKIP_NOT_IN_RULE,
    SKIP_UNSUPPORTED,
    RoutableProvider,
    Router,
    RoutingRule,
    parse_rules,
    parse_rules_json,
)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


CONFIG = BreakerConfig(
    window_s=30.0, min_calls=4, failure_rate_threshold=0.5, open_for_s=10.0, half_open_probes=2
)


def make_breaker(config: BreakerConfig = CONFIG) -> tuple[CircuitBreaker, FakeClock, list]:
    clock = FakeClock()
    changes: list = []
    breaker = CircuitBreaker(
        "zenith", config, clock=clock, on_change=lambda *args: changes.append(args)
    )
    return breaker, clock, changes


def trip(breaker: CircuitBreaker, n: int = 4) -> None:
    for _ in range(n):
        breaker.record_failure(100.0)


# ---- circuit breaker ---------------------------------------------------------------------------


def test_opens_when_the_failure_rate_reaches_the_threshold() -> None:
    breaker, clock, changes = make_breaker()
    breaker.record_success(10.0)
    breaker.record_success(10.0)
    breaker.record_failure(10.0)
    assert breaker.state == CLOSED  # 3 calls: under min_calls
    breaker.record_failure(10.0)  # 2 of 4 failed: 50% >= 50%
    assert breaker.state == OPEN
    assert not breaker.allow()
    assert changes[0][:4] == ("zenith", CLOSED, OPEN, clock.now)
    assert "2 of 4 calls failed" in changes[0][4]
    assert breaker.snapshot().opened_at == clock.now


def test_stays_closed_under_the_threshold() -> None:
    breaker, _, _ = make_breaker()
    for _ in range(3):
        breaker.record_success(10.0)
    breaker.record_failure(10.0)
    for _ in range(10):
        breaker.record_success(10.0)
    assert breaker.state == CLOSED


def test_stays_closed_under_min_calls_even_if_every_call_failed() -> None:
    breaker, _, changes = make_breaker()
    trip(breaker, 3)
    assert breaker.state == CLOSED
    assert breaker.allow()
    assert changes == []


def test_a_success_that_brings_the_calls_to_min_calls_can_open_it() -> None:
    breaker, _, _ = make_breaker()
    trip(breaker, 3)
    breaker.record_success(10.0)  # 3 of 4 failed
    assert breaker.state == OPEN


def test_the_window_slides() -> None:
    breaker, clock, _ = make_breaker()
    trip(breaker, 3)
    clock.advance(31)  # those failures left the window
    breaker.record_failure(10.0)
    assert breaker.state == CLOSED
    assert breaker.snapshot().calls == 1
    clock.advance(5)
    trip(breaker, 3)  # 4 failures within 30 s
    assert breaker.state == OPEN


def test_half_open_after_the_open_period() -> None:
    breaker, clock, changes = make_breaker()
    trip(breaker)
    clock.advance(9.9)
    assert breaker.state == OPEN
    assert not breaker.allow()
    clock.advance(0.1)
    assert breaker.state == HALF_OPEN
    assert changes[-1][1:3] == (OPEN, HALF_OPEN)


def test_half_open_allows_at_most_the_configured_probes() -> None:
    breaker, clock, _ = make_breaker()
    trip(breaker)
    clock.advance(10)
    assert breaker.allow()
    assert breaker.allow()
    assert not breaker.allow()  # both probes in flight
    assert breaker.snapshot().probes_in_flight == 2
    breaker.release()  # one reserved slot was not used
    assert breaker.allow()
    assert not breaker.allow()


def test_a_probe_slot_never_given_back_lapses() -> None:
    config = BreakerConfig(min_calls=1, open_for_s=10, half_open_probes=1, probe_timeout_s=5)
    breaker, clock, _ = make_breaker(config)
    breaker.record_failure(1.0)
    clock.advance(10)
    assert breaker.allow()
    assert not breaker.allow()
    clock.advance(5)
    assert breaker.allow()


def test_a_probe_success_closes_and_clears_the_window() -> None:
    breaker, clock, changes = make_breaker()
    trip(breaker)
    clock.advance(10)
    assert breaker.allow()
    breaker.record_success(20.0)
    assert breaker.state == CLOSED
    snap = breaker.snapshot()
    assert (snap.calls, snap.failures, snap.opened_at) == (0, 0, None)
    assert changes[-1][1:3] == (HALF_OPEN, CLOSED)
    assert changes[-1][4] == "probe succeeded"
    # A fresh window: it takes min_calls calls again to open.
    trip(breaker, 3)
    assert breaker.state == CLOSED


def test_a_probe_failure_reopens_for_the_full_period() -> None:
    breaker, clock, changes = make_breaker()
    trip(breaker)
    clock.advance(10)
    assert breaker.allow()
    breaker.record_failure(20.0)
    assert breaker.state == OPEN
    assert breaker.snapshot().opened_at == clock.now
    assert changes[-1][1:] == (HALF_OPEN, OPEN, clock.now, "probe failed")
    clock.advance(9)
    assert not breaker.allow()
    clock.advance(1)
    assert breaker.state == HALF_OPEN
    assert breaker.allow()


def test_late_answers_while_open_change_nothing() -> None:
    breaker, clock, _ = make_breaker()
    trip(breaker)
    opened = clock.now
    clock.advance(1)
    breaker.record_success(5.0)
    assert breaker.state == OPEN
    assert breaker.snapshot().opened_at == opened


def test_snapshot_statistics() -> None:
    breaker, clock, _ = make_breaker(BreakerConfig(min_calls=1000, max_samples=1000))
    empty = breaker.snapshot()
    assert (empty.calls, empty.success_rate, empty.p99_latency_ms) == (0, None, None)
    for ms in range(1, 101):  # 1..100 ms
        breaker.record_success(float(ms))
    breaker.record_failure(500.0)
    snap = breaker.snapshot()
    assert snap.state == CLOSED
    assert snap.calls == 101
    assert snap.failures == 1
    assert snap.success_rate == pytest.approx(100 / 101)
    assert snap.p99_latency_ms == 100.0  # nearest rank: the 100th of 101
    assert snap.at == clock.now
    clock.advance(31)
    assert breaker.snapshot().calls == 0


def test_p99_nearest_rank() -> None:
    assert p99([]) is None
    assert p99([7.0]) == 7.0
    assert p99([float(i) for i in range(1, 201)]) == 198.0


def test_max_samples_bounds_the_window() -> None:
    breaker, _, _ = make_breaker(BreakerConfig(min_calls=5, max_samples=5))
    for _ in range(20):
        breaker.record_success(1.0)
    assert breaker.snapshot().calls == 5


def test_declines_and_rejections_are_not_failures() -> None:
    assert not is_failure(CallOutcome.DECLINED)
    assert not is_failure(CallOutcome.REJECTED)
    assert not is_failure(CallOutcome.OK)
    assert not is_failure(CallOutcome.PENDING)
    assert is_failure(CallOutcome.ERROR)
    assert is_failure(CallOutcome.UNKNOWN)
    breaker, _, _ = make_breaker()
    for _ in range(10):
        breaker.record_outcome(CallOutcome.DECLINED, 5.0)
        breaker.record_outcome(CallOutcome.REJECTED, 5.0)
    assert breaker.state == CLOSED
    assert breaker.snapshot().success_rate == 1.0


def test_bad_config_is_refused() -> None:
    for bad in (
        {"window_s": 0},
        {"min_calls": 0},
        {"failure_rate_threshold": 0},
        {"failure_rate_threshold": 1.5},
        {"open_for_s": -1},
        {"half_open_probes": 0},
        {"probe_timeout_s": 0},
        {"min_calls": 10, "max_samples": 5},
    ):
        with pytest.raises(ValueError):
            BreakerConfig(**bad)


def test_board_keeps_one_breaker_per_provider_and_a_bounded_change_log() -> None:
    clock = FakeClock()
    board = BreakerBoard(CONFIG, clock=clock, max_changes=3)
    assert board.breaker("zenith") is board.breaker("zenith")
    for _ in range(4):
        board.record("zenith", False, 50.0)
        board.record("ramp", True, 50.0)
    assert board.state("zenith") == OPEN
    assert board.state("ramp") == CLOSED
    assert not board.allow("zenith")
    assert board.allow("ramp")
    [change] = board.changes()
    assert (change.seq, change.provider, change.from_state, change.to_state, change.at) == (
        1,
        "zenith",
        CLOSED,
        OPEN,
        clock.now,
    )
    assert change.describe().startswith("breaker zenith: closed -> open (4 of 4 calls failed")
    clock.advance(10)
    assert board.allow("zenith")  # a probe
    board.record_outcome("zenith", CallOutcome.UNKNOWN, 5000.0)  # probe failed
    clock.advance(10)
    board.record_outcome("zenith", CallOutcome.DECLINED, 80.0)  # probe succeeded
    assert board.last_seq == 5
    kept = board.changes()
    assert [c.seq for c in kept] == [3, 4, 5]  # bounded: the oldest two were dropped
    assert [c.to_state for c in kept] == [OPEN, HALF_OPEN, CLOSED]
    assert [c.seq for c in board.changes(since=4)] == [5]
    assert set(board.snapshots()) == {"zenith", "ramp"}


def test_racing_threads_never_exceed_the_probe_limit_and_keep_counts() -> None:
    """Real threads racing allow/record on one breaker: no exception, no lost update, and
    a half-open breaker never grants more probes than configured."""
    clock = FakeClock()
    config = BreakerConfig(
        window_s=1e9, min_calls=10**6, open_for_s=10, half_open_probes=3, max_samples=10**6
    )
    board = BreakerBoard(config, clock=clock)
    breaker = board.breaker("zenith")
    threads, per_thread = 8, 500
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        try:
            barrier.wait()
            for _ in range(per_thread):
                if breaker.allow():
                    board.record("zenith", rng.random() < 0.5, rng.uniform(1, 100))
                _ = breaker.snapshot()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert errors == []
    snap = breaker.snapshot()
    assert snap.calls == threads * per_thread  # closed throughout: every call recorded
    assert snap.state == CLOSED

    # Half-open: racing threads may take at most half_open_probes slots between them.
    trip_board = BreakerBoard(
        BreakerConfig(min_calls=1, open_for_s=10, half_open_probes=3), clock=clock
    )
    trip_board.record("ramp", False, 1.0)
    clock.advance(10)
    granted: list[bool] = []
    lock = threading.Lock()
    barrier2 = threading.Barrier(threads)

    def probe() -> None:
        barrier2.wait()
        for _ in range(50):
            ok = trip_board.allow("ramp")
            with lock:
                granted.append(ok)

    pool = [threading.Thread(target=probe) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert granted.count(True) == 3
    assert trip_board.breaker("ramp").snapshot().probes_in_flight == 3


# ---- retry policy ------------------------------------------------------------------------------


@given(
    max_attempts=st.integers(1, 20),
    base=st.floats(0, 10, allow_nan=False),
    extra=st.floats(0, 100, allow_nan=False),
    multiplier=st.floats(1, 10, allow_nan=False),
    attempt=st.integers(1, 10_000),
    seed=st.integers(0, 2**32),
)
def test_delays_stay_within_the_exponential_ceiling_and_the_cap(
    max_attempts: int,
    base: float,
    extra: float,
    multiplier: float,
    attempt: int,
    seed: int,
) -> None:
    policy = RetryPolicy(max_attempts, base, base + extra, multiplier)
    ceiling = policy.ceiling(attempt)
    assert 0 <= ceiling <= policy.max_delay_s
    if attempt < 50:
        assert ceiling == min(policy.max_delay_s, base * multiplier ** (attempt - 1))
    delay = policy.delay(attempt, random.Random(seed))
    assert 0 <= delay <= ceiling <= base + extra


def test_delay_is_full_jitter_with_the_injected_random_source() -> None:
    policy = RetryPolicy(max_attempts=5, base_delay_s=0.1, max_delay_s=1.0)
    assert [policy.ceiling(n) for n in range(1, 6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0])
    a = [policy.delay(n, random.Random(7)) for n in range(1, 6)]
    b = [policy.delay(n, random.Random(7)) for n in range(1, 6)]
    assert a == b
    expected = random.Random(7).uniform(0, 0.4)
    assert policy.delay(3, random.Random(7)) == expected
    assert policy.ceiling(10**6) == 1.0  # no overflow: the cap holds


@given(outcome=st.sampled_from(list(CallOutcome)), attempt=st.integers(1, 50))
def test_only_errors_and_unknowns_are_retried_and_only_below_max_attempts(
    outcome: CallOutcome, attempt: int
) -> None:
    policy = RetryPolicy(max_attempts=4, base_delay_s=0.05, max_delay_s=2.0)
    retry = policy.should_retry(outcome, attempt)
    if outcome in (CallOutcome.DECLINED, CallOutcome.REJECTED, CallOutcome.OK):
        assert not retry
    assert retry == (outcome in (CallOutcome.ERROR, CallOutcome.UNKNOWN) and attempt < 4)


def test_declines_are_never_retried() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay_s=0.05, max_delay_s=2.0)
    assert not policy.should_retry(CallOutcome.DECLINED, 1)
    assert not policy.should_retry(CallOutcome.REJECTED, 1)
    assert policy.should_retry(CallOutcome.ERROR, 1)
    assert policy.should_retry(CallOutcome.UNKNOWN, 9)
    assert not policy.should_retry(CallOutcome.UNKNOWN, 10)


def test_bad_retry_policies_are_refused() -> None:
    for args in ((0, 0.1, 1.0), (3, -0.1, 1.0), (3, 1.0, 0.5), (3, 0.1, 1.0, 0.5)):
        with pytest.raises(ValueError):
            RetryPolicy(*args)
    policy = RetryPolicy(3, 0.1, 1.0)
    with pytest.raises(ValueError):
        policy.delay(0, random.Random(1))
    with pytest.raises(ValueError):
        policy.should_retry(CallOutcome.ERROR, 0)


# ---- routing -----------------------------------------------------------------------------------


class FakeProvider:
    """Only what routing uses: supports() and fee()."""

    def __init__(self, methods: set[str], currencies: set[str], fixed: int, bps: int = 0):
        self.methods = methods
        self.currencies = currencies
        self.fixed = fixed
        self.bps = bps
        self.fee_calls = 0

    def supports(self, method: str, currency: str) -> bool:
        return method in self.methods and currency in self.currencies

    def fee(self, method: str, currency: str, amount: int) -> int:
        self.fee_calls += 1
        return self.fixed + amount * self.bps // 10_000


def providers() -> dict[str, FakeProvider]:
    return {
        "zenith": FakeProvider({"card"}, {"EUR", "USD"}, fixed=30, bps=290),
        "ramp": FakeProvider({"card", "upi"}, {"INR", "EUR"}, fixed=10, bps=200),
        "monnify": FakeProvider({"card", "bank_transfer"}, {"EUR", "NGN"}, fixed=50, bps=100),
    }


def make_router(
    rules: list[RoutingRule], strategy: str = PREFERENCE
) -> tuple[Router, BreakerBoard, FakeClock, dict[str, FakeProvider]]:
    clock = FakeClock()
    board = BreakerBoard(BreakerConfig(min_calls=2, open_for_s=10), clock=clock)
    ps = providers()
    return Router(rules, ps, board, strategy), board, clock, ps


def open_breaker(board: BreakerBoard, name: str) -> None:
    board.record(name, False, 1.0)
    board.record(name, False, 1.0)
    assert board.state(name) == OPEN


def reasons(decision) -> dict[str, str | None]:
    return {c.provider: ("chosen" if c.chosen else c.skipped) for c in decision.candidates}


def test_fake_providers_satisfy_the_routing_protocol() -> None:
    provider: RoutableProvider = FakeProvider(set(), set(), 0)
    assert not provider.supports("card", "EUR")


def test_preference_takes_the_rule_order() -> None:
    rule = RoutingRule(("monnify", "zenith"), name="eu-cards", currencies=frozenset({"EUR"}))
    router, _, _, ps = make_router([rule])
    decision = router.route("card", "EUR", 10_000, set())
    assert decision.provider == "monnify"
    assert (decision.rule, decision.strategy) == ("eu-cards", PREFERENCE)
    assert reasons(decision) == {"monnify": "chosen", "zenith": None, "ramp": SKIP_NOT_IN_RULE}
    assert sum(p.fee_calls for p in ps.values()) == 0  # preference never asks for fees
    assert "rule eu-cards by preference -> monnify" in decision.describe()
    assert "zenith: fallback" in decision.describe()
    assert "ramp: not_in_rule" in decision.describe()


def test_cost_takes_the_cheapest_and_ties_go_by_rule_order() -> None:
    rule = RoutingRule(("zenith", "ramp", "monnify"), name="eu")
    router, _, _, _ = make_router([rule], strategy=COST)
    # 10 000: zenith 320, ramp 210, monnify 150
    decision = router.route("card", "EUR", 10_000, set())
    assert decision.provider == "monnify"
    assert [(c.provider, c.fee) for c in decision.candidates] == [
        ("monnify", 150),
        ("ramp", 210),
        ("zenith", 320),
    ]
    # 4 000: zenith 146, ramp 90, monnify 90: a tie, ramp is first in the rule
    assert router.route("card", "EUR", 4_000, set()).provider == "ramp"
    assert "fee 90" in router.route("card", "EUR", 4_000, set()).describe()


def test_a_rule_may_choose_its_own_strategy() -> None:
    rule = RoutingRule(("zenith", "monnify"), name="r", strategy=COST)
    router, _, _, _ = make_router([rule], strategy=PREFERENCE)
    decision = router.route("card", "EUR", 10_000)
    assert (decision.provider, decision.strategy) == ("monnify", COST)


def test_failover_when_a_breaker_is_open() -> None:
    rule = RoutingRule(("zenith", "monnify", "ramp"), name="eu")
    router, board, clock, _ = make_router([rule])
    open_breaker(board, "zenith")
    decision = router.route("card", "EUR", 1_000, set())
    assert decision.provider == "monnify"
    assert reasons(decision) == {"zenith": SKIP_BREAKER_OPEN, "monnify": "chosen", "ramp": None}
    # Half-open after the period: zenith gets the probe, the next payment fails over again.
    clock.advance(10)
    assert router.route("card", "EUR", 1_000, set()).provider == "zenith"
    assert router.route("card", "EUR", 1_000, set()).provider == "monnify"
    board.record("zenith", True, 40.0)  # the probe succeeded
    assert router.route("card", "EUR", 1_000, set()).provider == "zenith"


def test_no_provider_when_every_breaker_is_open() -> None:
    rule = RoutingRule(("zenith", "monnify"), name="eu")
    router, board, _, _ = make_router([rule])
    open_breaker(board, "zenith")
    open_breaker(board, "monnify")
    decision = router.route("card", "EUR", 1_000, set())
    assert decision.provider is None
    assert "no eligible provider" in decision.describe()


def test_upi_goes_only_to_the_provider_that_supports_it() -> None:
    router, _, _, _ = make_router([])  # the default rule: every provider, by cost
    decision = router.route("upi", "INR", 50_000, set())
    assert decision.provider == "ramp"
    assert (decision.rule, decision.strategy) == ("default", COST)
    assert reasons(decision) == {
        "ramp": "chosen",
        "zenith": SKIP_UNSUPPORTED,
        "monnify": SKIP_UNSUPPORTED,
    }
    # A rule naming providers that cannot take UPI leaves no one.
    router2, _, _, _ = make_router([RoutingRule(("zenith",), methods=frozenset({"upi"}))])
    assert router2.route("upi", "INR", 50_000, set()).provider is None


def test_exclusions_are_skipped_and_said_so() -> None:
    router, _, _, _ = make_router([], strategy=COST)
    decision = router.route("card", "EUR", 10_000, {"monnify"})
    assert decision.provider == "ramp"
    assert reasons(decision)["monnify"] == SKIP_EXCLUDED
    assert router.route("upi", "INR", 1, {"ramp"}).provider is None


def test_the_first_matching_rule_wins_with_amount_bounds_inclusive() -> None:
    rules = [
        RoutingRule(("zenith",), name="small", max_amount=999),
        RoutingRule(("monnify",), name="mid", min_amount=1_000, max_amount=5_000),
        RoutingRule(("ramp",), name="also-mid", min_amount=1_000),
    ]
    router, _, _, _ = make_router(rules)
    assert router.route("card", "EUR", 999, set()).rule == "small"
    assert router.route("card", "EUR", 1_000, set()).rule == "mid"
    assert router.route("card", "EUR", 5_000, set()).rule == "mid"
    decision = router.route("card", "EUR", 5_001, set())
    assert (decision.rule, decision.provider) == ("also-mid", "ramp")
    assert decision.as_dict()["candidates"][0] == {
        "provider": "ramp",
        "skipped": None,
        "chosen": True,
        "fee": None,
    }


def test_the_breaker_is_asked_only_up_to_the_chosen_provider() -> None:
    """A half-open breaker's probe slot must not be taken by a provider that is not used."""
    rule = RoutingRule(("monnify", "zenith"), name="eu")
    router, board, clock, _ = make_router([rule])
    open_breaker(board, "zenith")
    clock.advance(10)  # zenith half-open, one probe
    assert router.route("card", "EUR", 1, set()).provider == "monnify"
    assert board.breaker("zenith").snapshot().probes_in_flight == 0


def test_router_refuses_rules_naming_unknown_providers() -> None:
    with pytest.raises(ValueError, match="unknown providers stripe"):
        make_router([RoutingRule(("zenith", "stripe"), name="r")])
    with pytest.raises(ValueError, match="strategy"):
        make_router([], strategy="random")


def test_router_without_providers_chooses_none() -> None:
    board = BreakerBoard(clock=FakeClock())
    decision = Router([], {}, board).route("card", "EUR", 1, set())
    assert (decision.provider, decision.candidates) == (None, ())


def test_parse_rules() -> None:
    rules = parse_rules_json(
        """[
          {"name": "upi", "methods": "upi", "providers": ["ramp"]},
          {"name": "big-eur", "currencies": ["EUR"], "min_amount": 100000,
           "providers": ["zenith", "monnify"], "strategy": "cost"},
          {"providers": ["zenith"]}
        ]"""
    )
    assert rules[0] == RoutingRule(("ramp",), name="upi", methods=frozenset({"upi"}))
    assert rules[1] == RoutingRule(
        ("zenith", "monnify"),
        name="big-eur",
        currencies=frozenset({"EUR"}),
        min_amount=100_000,
        strategy=COST,
    )
    assert rules[2].name == "rule-2"
    router, _, _, _ = make_router(list(rules))
    assert router.route("card", "EUR", 200_000, set()).provider == "monnify"
    assert parse_rules([]) == ()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"providers": ["a"]}, "must be a list"),
        (["x"], "routing rule 0 must be an object"),
        ([{"providers": ["a"], "currency": "EUR"}], "unknown keys currency"),
        ([{}], "providers must be a non-empty list"),
        ([{"providers": []}], "providers must be a non-empty list"),
        ([{"providers": "zenith"}], "providers must be a non-empty list"),
        ([{"providers": ["a", "a"]}], "providers must not repeat"),
        ([{"providers": ["a"], "methods": ["cash"]}], "unknown methods cash"),
        ([{"providers": ["a"], "methods": []}], "methods must be a string or a non-empty list"),
        ([{"providers": ["a"], "currencies": ["eur"]}], "'eur' is not an ISO 4217"),
        ([{"providers": ["a"], "currencies": [978]}], "currencies must be a string"),
        ([{"providers": ["a"], "min_amount": -1}], "min_amount must be a non-negative integer"),
        ([{"providers": ["a"], "max_amount": 1.5}], "max_amount must be a non-negative integer"),
        ([{"providers": ["a"], "max_amount": True}], "max_amount must be a non-negative integer"),
        (
            [{"providers": ["a"], "min_amount": 10, "max_amount": 5}],
            "min_amount must be <= max_amount",
        ),
        ([{"providers": ["a"], "strategy": "random"}], "strategy must be one of"),
        ([{"providers": ["a"], "name": ""}], "name must be a non-empty string"),
        (
            [{"name": "x", "providers": ["a"]}, {"name": "x", "providers": ["b"]}],
            "names repeat: x",
        ),
    ],
)
def test_bad_routing_config_is_refused_clearly(config: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_rules(config)


def test_bad_routing_json_is_refused() -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_rules_json("[{")
