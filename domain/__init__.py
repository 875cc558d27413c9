"""The ledger's domain: money, wallets, transfers and their invariants.

Imports only the standard library and ``eventsourcing.domain``.
"""
