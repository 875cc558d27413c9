"""Routing: which provider a payment is sent to, and why.

A ``RoutingRule`` matches a payment by method, currency and amount range and names the
providers it may go to, in order of preference. The first matching rule wins; when none
matches, the default rule takes every provider, cheapest first.

Within the rule, a provider is skipped when the caller excludes it (``excluded``), when it
does not support the method and currency (``unsupported``), or when its circuit breaker
does not allow a call (``breaker_open``); the next one is tried (failover). Providers the
rule does not name are listed as ``not_in_rule``. Strategies order the rule's providers:

- ``preference``: the rule's order;
- ``cost``: the lowest ``fee()`` first, ties in the rule's order.

The breaker is asked (``allow()``, which reserves a probe slot of a half-open breaker) only
for the provider chosen and the ones skipped before it. If the caller then does not call
the chosen provider, it gives the slot back with ``BreakerBoard.release``.

Rules come from configuration with ``parse_rules`` (a list of objects, e.g. JSON)::

    [{"name": "upi", "methods": ["upi"], "providers": ["ramp"]},
     {"name": "big-eur", "currencies": ["EUR"], "min_amount": 100000,
      "providers": ["stripe", "zenith"], "strategy": "preference"}]
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any, Protocol

from commands.payments.breaker import BreakerBoard
from domain.errors import LedgerError
from domain.money import Currency
from domain.payment import METHODS

PREFERENCE = "preference"
COST = "cost"
STRATEGIES = (PREFERENCE, COST)

SKIP_EXCLUDED = "excluded"
SKIP_UNSUPPORTED = "unsupported"
SKIP_BREAKER_OPEN = "breaker_open"
SKIP_NOT_IN_RULE = "not_in_rule"

DEFAULT_RULE_NAME = "default"


class RoutableProvider(Protocol):
    """What routing needs of a provider (``PaymentProvider`` has it)."""

    def supports(self, method: str, currency: str) -> bool: ...

    def fee(self, method: str, currency: str, amount: int) -> int: ...


@dataclass(frozen=True, slots=True)
class RoutingRule:
    """Matches a payment when each given criterion holds (None: any). ``min_amount`` and
    ``max_amount`` are inclusive, in minor units. ``strategy`` None: the router's."""

    providers: tuple[str, ...]
    name: str = ""
    methods: frozenset[str] | None = None
    currencies: frozenset[str] | None = None
    min_amount: int | None = None
    max_amount: int | None = None
    strategy: str | None = None

    def __post_init__(self) -> None:
        label = self.name or "rule"
        if not self.providers:
            raise ValueError(f"{label}: providers must not be empty")
        if len(set(self.providers)) != len(self.providers):
            raise ValueError(f"{label}: providers must not repeat")
        if self.strategy is not None and self.strategy not in STRATEGIES:
            raise ValueError(f"{label}: strategy must be one of {', '.join(STRATEGIES)}")
        if (
            self.min_amount is not None
            and self.max_amount is not None
            and self.min_amount > self.max_amount
        ):
            raise ValueError(f"{label}: min_amount must be <= max_amount")

    def matches(self, method: str, currency: str, amount: int) -> bool:
        return (
            (self.methods is None or method in self.methods)
            and (self.currencies is None or currency in self.currencies)
            and (self.min_amount is None or amount >= self.min_amount)
            and (self.max_amount is None or amount <= self.max_amount)
        )


@dataclass(frozen=True, slots=True)
class Candidate:
    """One provider as routing saw it. ``skipped`` is why it was passed over (None: it is
    the chosen one, or it was not reached because an earlier one was chosen). ``fee`` is
    asked only of providers that support the payment and are not excluded."""

    provider: str
    skipped: str | None
    chosen: bool = False
    fee: int | None = None


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """The chosen provider (None: no eligible provider) and how it was chosen."""

    provider: str | None
    rule: str
    strategy: str
    candidates: tuple[Candidate, ...]

    def describe(self) -> str:
        """One line for a payment's timeline."""
        parts = []
        for c in self.candidates:
            fee = f" fee {c.fee}" if c.fee is not None and self.strategy == COST else ""
            if c.chosen:
                parts.append(f"{c.provider}{fee}: chosen")
            elif c.skipped is not None:
                parts.append(f"{c.provider}: {c.skipped}")
            else:
                parts.append(f"{c.provider}{fee}: fallback")
        head = f"rule {self.rule} by {self.strategy}"
        chosen = self.provider or "no eligible provider"
        return f"{head} -> {chosen} [{'; '.join(parts)}]"

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "rule": self.rule,
            "strategy": self.strategy,
            "candidates": [
                {"provider": c.provider, "skipped": c.skipped, "chosen": c.chosen, "fee": c.fee}
                for c in self.candidates
            ],
        }


class Router:
    """Chooses a provider for a payment (see the module's docstring)."""

    def __init__(
        self,
        rules: Sequence[RoutingRule],
        providers: Mapping[str, RoutableProvider],
        board: BreakerBoard,
        strategy: str = PREFERENCE,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}")
        for i, rule in enumerate(rules):
            unknown = [p for p in rule.providers if p not in providers]
            if unknown:
                raise ValueError(
                    f"{rule.name or f'rule {i}'}: unknown providers {', '.join(unknown)}"
                )
        self.rules = tuple(rules)
        self.providers = providers
        self.board = board
        self.strategy = strategy

    def rule_for(self, method: str, currency: str, amount: int) -> RoutingRule:
        """The first rule matching the payment, else the default rule (every provider, by
        cost)."""
        for rule in self.rules:
            if rule.matches(method, currency, amount):
                return rule
        return RoutingRule(tuple(self.providers), name=DEFAULT_RULE_NAME, strategy=COST)

    def route(
        self, method: str, currency: str, amount: int, exclude: Set[str] = frozenset()
    ) -> RouteDecision:
        """Choose a provider for the payment, never one in ``exclude``. The decision's
        candidates are the eligible providers in the strategy's order (the chosen one, the
        ones skipped for their breaker before it, the fallbacks after it), then the ones
        excluded or unsupported, then the ones the rule does not name."""
        if not self.providers:
            return RouteDecision(None, DEFAULT_RULE_NAME, COST, ())
        rule = self.rule_for(method, currency, amount)
        strategy = rule.strategy or self.strategy
        eligible: list[tuple[int, int, str]] = []  # (fee or 0, rule order, name)
        fees: dict[str, int] = {}
        skipped: list[Candidate] = []
        for order, name in enumerate(rule.providers):
            provider = self.providers[name]
            if name in exclude:
                skipped.append(Candidate(name, SKIP_EXCLUDED))
            elif not provider.supports(method, currency):
                skipped.append(Candidate(name, SKIP_UNSUPPORTED))
            elif strategy == COST:
                fees[name] = provider.fee(method, currency, amount)
                eligible.append((fees[name], order, name))
            else:
                eligible.append((0, order, name))
        eligible.sort()
        considered: list[Candidate] = []
        chosen: str | None = None
        for _, _, name in eligible:
            fee = fees.get(name)
            if chosen is not None:
                considered.append(Candidate(name, None, fee=fee))
            elif self.board.allow(name):
                chosen = name
                considered.append(Candidate(name, None, chosen=True, fee=fee))
            else:
                considered.append(Candidate(name, SKIP_BREAKER_OPEN, fee=fee))
        named = set(rule.providers)
        others = [Candidate(n, SKIP_NOT_IN_RULE) for n in self.providers if n not in named]
        return RouteDecision(
            provider=chosen,
            rule=rule.name or "unnamed",
            strategy=strategy,
            candidates=(*considered, *skipped, *others),
        )


# ---- configuration -----------------------------------------------------------------------------

_KEYS = frozenset(
    {"name", "methods", "currencies", "min_amount", "max_amount", "providers", "strategy"}
)


def parse_rules(config: object) -> tuple[RoutingRule, ...]:
    """Rules from a list of objects (parsed JSON, say). Raises ``ValueError`` naming the
    rule and the field for anything malformed: unknown keys, unknown methods or currencies,
    negative or inverted amounts, an empty or repeating provider list, a bad strategy."""
    if not isinstance(config, list):
        raise ValueError("routing rules must be a list of objects")
    rules = [_parse_rule(i, item) for i, item in enumerate(config)]
    names = [r.name for r in rules]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"routing rule names repeat: {', '.join(repeated)}")
    return tuple(rules)


def parse_rules_json(text: str) -> tuple[RoutingRule, ...]:
    """``parse_rules`` of a JSON document (e.g. an environment variable)."""
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"routing rules are not valid JSON: {exc}") from None
    return parse_rules(config)


def _parse_rule(index: int, item: object) -> RoutingRule:
    where = f"routing rule {index}"
    if not isinstance(item, dict):
        raise ValueError(f"{where} must be an object")
    unknown = sorted(str(k) for k in item if k not in _KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown keys {', '.join(unknown)}")
    name = item.get("name", f"rule-{index}")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{where}: name must be a non-empty string")
    where = f"routing rule {index} ({name})"
    methods = _strings(where, "methods", item.get("methods"))
    if methods is not None:
        bad = sorted(m for m in methods if m not in METHODS)
        if bad:
            raise ValueError(
                f"{where}: unknown methods {', '.join(bad)} (known: {', '.join(METHODS)})"
            )
    currencies = _strings(where, "currencies", item.get("currencies"))
    if currencies is not None:
        for code in sorted(currencies):
            try:
                Currency.of(code)
            except LedgerError:
                raise ValueError(f"{where}: {code!r} is not an ISO 4217 currency code") from None
    providers = item.get("providers")
    if (
        not isinstance(providers, list)
        or not providers
        or not all(isinstance(p, str) and p for p in providers)
    ):
        raise ValueError(f"{where}: providers must be a non-empty list of provider names")
    strategy = item.get("strategy")
    if strategy is not None and strategy not in STRATEGIES:
        raise ValueError(f"{where}: strategy must be one of {', '.join(STRATEGIES)}")
    try:
        return RoutingRule(
            providers=tuple(providers),
            name=name,
            methods=methods,
            currencies=currencies,
            min_amount=_amount(where, "min_amount", item.get("min_amount")),
            max_amount=_amount(where, "max_amount", item.get("max_amount")),
            strategy=strategy,
        )
    except ValueError as exc:
        raise ValueError(f"routing rule {index}: {exc}") from None


def _strings(where: str, key: str, value: object) -> frozenset[str] | None:
    """A string or a non-empty list of strings; None (absent) matches anything."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: {key} must be a string or a non-empty list of strings")
    return frozenset(value)


def _amount(where: str, key: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where}: {key} must be a non-negative integer of minor units")
    return value
