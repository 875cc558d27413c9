"""Adapters of the provider port (``commands.payments.ports.PaymentProvider``), one module per
payment service provider: each speaks its provider's protocol and classifies every answer."""
