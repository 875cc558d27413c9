"""The ledger's error hierarchy.

Every business rule is a named guard that raises one of these; nothing is an ``assert``.
Each error carries a stable ``code`` that the API turns into a problem ``type``::

    LedgerError
     ├── ValidationError                 validation-error
     │    ├── InvalidAmount              invalid-amount
     │    ├── UnknownCurrency            unknown-currency
     │    ├── SameAccount                same-account
     │    └── CardNumberRejected         card-number-rejected
     ├── NotFound                        not-found
     ├── Forbidden                       forbidden
     ├── InsufficientFunds               insufficient-funds
     ├── CurrencyMismatch                currency-mismatch
     ├── BalanceOverflow                 balance-overflow
     ├── WalletNotActive
     │    ├── WalletFrozen               wallet-frozen
     │    └── WalletClosed               wallet-closed
     ├── WalletNotEmpty                  wallet-not-empty
     ├── InvalidWalletState              invalid-wallet-state
     ├── TransferStateError
     │    ├── TransferNotPending         transfer-not-pending
     │    ├── TransferExpired            transfer-expired
     │    └── PostExceedsPending         post-exceeds-pending
     └── PaymentStateError               payment-state
          ├── PaymentNotRoutable         payment-not-routable
          ├── PaymentOutcomeUnknown      payment-outcome-unknown
          ├── PaymentNotCapturable       payment-not-capturable
          ├── AuthorizationExpired       authorization-expired
          ├── CaptureExceedsAuthorized   capture-exceeds-authorized
          ├── PaymentNotCancelable       payment-not-cancelable
          ├── PaymentNotRefundable       payment-not-refundable
          ├── RefundExceedsCaptured      refund-exceeds-captured
          ├── RefundAlreadyRecorded      refund-already-recorded
          ├── PaymentNotDisputable       payment-not-disputable
          ├── DisputeExceedsCaptured     dispute-exceeds-captured
          └── PaymentNotDisputed         payment-not-disputed
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every business-rule failure. ``code`` is stable and public."""

    code = "ledger-error"
    title = "Ledger error"
    status = 422

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ValidationError(LedgerError):
    code = "validation-error"
    title = "Invalid request"
    status = 422


class InvalidAmount(ValidationError):
    code = "invalid-amount"
    title = "Invalid amount"


class UnknownCurrency(ValidationError):
    code = "unknown-currency"
    title = "Unknown currency"


class SameAccount(ValidationError):
    code = "same-account"
    title = "Debit and credit account are the same"


class NotFound(LedgerError):
    code = "not-found"
    title = "Not found"
    status = 404


class Forbidden(LedgerError):
    code = "forbidden"
    title = "Forbidden"
    status = 403


class InsufficientFunds(LedgerError):
    code = "insufficient-funds"
    title = "Insufficient funds"


class CurrencyMismatch(LedgerError):
    code = "currency-mismatch"
    title = "Currency mismatch"


class BalanceOverflow(LedgerError):
    code = "balance-overflow"
    title = "Balance would exceed the supported maximum"


class WalletNotActive(LedgerError):
    code = "wallet-not-active"
    title = "Wallet is not active"
    status = 409


class WalletFrozen(WalletNotActive):
    code = "wallet-frozen"
    title = "Wallet is frozen"


class WalletClosed(WalletNotActive):
    code = "wallet-closed"
    title = "Wallet is closed"


class WalletNotEmpty(LedgerError):
    code = "wallet-not-empty"
    title = "Wallet balance is not zero"
    status = 409


class InvalidWalletState(LedgerError):
    code = "invalid-wallet-state"
    title = "Operation not allowed in the wallet's current state"
    status = 409


class TransferStateError(LedgerError):
    code = "transfer-state"
    title = "Transfer is in the wrong state"
    status = 409


class TransferNotPending(TransferStateError):
    code = "transfer-not-pending"
    title = "Transfer is not pending"


class TransferExpired(TransferStateError):
    code = "transfer-expired"
    title = "Pending transfer has expired"


class PostExceedsPending(TransferStateError):
    code = "post-exceeds-pending"
    title = "Amount to post exceeds the pending amount"
    status = 422


# ---- payments (issue 4) ---------------------------------------------------------------------


class CardNumberRejected(ValidationError):
    """A card number (PAN) appeared in a request: only provider tokens are accepted."""

    code = "card-number-rejected"
    title = "Card numbers are not accepted; send a provider token"


class PaymentStateError(LedgerError):
    code = "payment-state"
    title = "Payment is in the wrong state"
    status = 409


class PaymentNotRoutable(PaymentStateError):
    code = "payment-not-routable"
    title = "Payment cannot start a provider attempt in its current state"


class PaymentOutcomeUnknown(PaymentStateError):
    code = "payment-outcome-unknown"
    title = "The outcome of the last provider attempt is not known yet"


class PaymentNotCapturable(PaymentStateError):
    code = "payment-not-capturable"
    title = "Payment cannot be captured"


class AuthorizationExpired(PaymentStateError):
    code = "authorization-expired"
    title = "Authorization has expired"


class CaptureExceedsAuthorized(PaymentStateError):
    code = "capture-exceeds-authorized"
    title = "Amount to capture exceeds the authorized amount"
    status = 422


class PaymentNotCancelable(PaymentStateError):
    code = "payment-not-cancelable"
    title = "Payment cannot be canceled"


class PaymentNotRefundable(PaymentStateError):
    code = "payment-not-refundable"
    title = "Payment cannot be refunded"


class RefundExceedsCaptured(PaymentStateError):
    code = "refund-exceeds-captured"
    title = "Refund exceeds the captured amount not yet refunded"
    status = 422


class RefundAlreadyRecorded(PaymentStateError):
    code = "refund-already-recorded"
    title = "A refund with this id is already recorded"


class PaymentNotDisputable(PaymentStateError):
    code = "payment-not-disputable"
    title = "Payment cannot be disputed"


class DisputeExceedsCaptured(PaymentStateError):
    code = "dispute-exceeds-captured"
    title = "Disputed amount exceeds the captured amount not refunded"
    status = 422


class PaymentNotDisputed(PaymentStateError):
    code = "payment-not-disputed"
    title = "Payment has no open dispute"


# ---- scheduled payments ---------------------------------------------------------------------
#
#     ValidationError
#      └── InvalidFrequency              invalid-frequency
#     ScheduleStateError                 schedule-state
#      ├── ScheduleNotActive             schedule-not-active
#      ├── OccurrenceAlreadyHandled      occurrence-already-handled
#      ├── OccurrenceOutOfOrder          occurrence-out-of-order
#      ├── OccurrenceNotDue              occurrence-not-due
#      └── OccurrenceMissed              occurrence-missed


class InvalidFrequency(ValidationError):
    code = "invalid-frequency"
    title = "Invalid frequency"


class ScheduleStateError(LedgerError):
    code = "schedule-state"
    title = "Scheduled payment is in the wrong state"
    status = 409


class ScheduleNotActive(ScheduleStateError):
    code = "schedule-not-active"
    title = "Scheduled payment is canceled or completed"


class OccurrenceAlreadyHandled(ScheduleStateError):
    """Another scheduler (or an earlier try) already started or skipped this occurrence."""

    code = "occurrence-already-handled"
    title = "This occurrence was already started or skipped"


class OccurrenceOutOfOrder(ScheduleStateError):
    """Not the schedule's next occurrence: a later number, or a due time from a stale view."""

    code = "occurrence-out-of-order"
    title = "This is not the schedule's next occurrence"


class OccurrenceNotDue(ScheduleStateError):
    code = "occurrence-not-due"
    title = "This occurrence is not due yet"


class OccurrenceMissed(ScheduleStateError):
    """The catch-up policy says this overdue occurrence is skipped, not run."""

    code = "occurrence-missed"
    title = "This occurrence was missed; the catch-up policy skips it"
