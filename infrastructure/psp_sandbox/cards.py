"""Test card numbers: Luhn check, brand, last4, and the numbers that always decline.

A card number is only ever looked at here, while a token is made; nothing keeps it."""

from __future__ import annotations

# Magic numbers, as on real PSP sandboxes: these always decline with the given code.
DECLINING_CARDS = {
    "4000000000000002": "card_declined",
    "4000000000009995": "insufficient_funds",
}
DECLINING_VPAS = {"fail@upi": "upi_rejected"}
DECLINING_ACCOUNTS = {"0000000000": "account_closed"}


def luhn_valid(number: str) -> bool:
    if not number.isdigit() or not 13 <= len(number) <= 19:
        return False
    total = 0
    for i, ch in enumerate(reversed(number)):
        digit = int(ch)
        if i % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def brand(number: str) -> str:
    if number.startswith("4"):
        return "visa"
    if number[:2] in {"34", "37"}:
        return "amex"
    if number[:2] in {"51", "52", "53", "54", "55"} or 2221 <= int(number[:4]) <= 2720:
        return "mastercard"
    if number.startswith(("6011", "65")):
        return "discover"
    if number.startswith(("5060", "5061", "6500")):
        return "verve"
    return "unknown"
