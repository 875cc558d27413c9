"""One typed settings object shared by every ``ledger`` subcommand (env prefix ``LEDGER_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything configurable. Unsafe values are refused at start-up, not discovered later."""

    model_config = SettingsConfigDict(env_prefix="LEDGER_", extra="ignore")

    database_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL (>= 15) URL. Unset: an embedded server under state_dir.",
    )
    state_dir: Path = Field(default=Path(".ledger"), description="Embedded database and state.")
    database_name: str = Field(
        default="ledger", description="Database used on the embedded server."
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)

    pool_size: int = Field(default=8, ge=1, le=200)
    lock_timeout_s: int = Field(default=5, ge=1, le=600)
    wallet_cache_size: int = Field(
        default=50_000, ge=0, le=10_000_000, description="Aggregates the writer keeps in memory."
    )
    max_batch_commands: int = Field(
        default=1_000, ge=1, le=100_000, description="Commands per group-commit transaction."
    )
    writer_overlap: bool = Field(
        default=True,
        description="Apply the next batch while the one before it commits (off: one at a time).",
    )
    idempotency_ttl_hours: int = Field(default=48, ge=24)
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    min_position_wait_s: float = Field(default=5.0, gt=0, le=60)

    projection_batch_size: int = Field(default=5_000, ge=1, le=100_000)
    projection_poll_s: float = Field(default=0.2, gt=0, le=10)
    run_projections_in_service: bool = True
    sweeper_interval_s: float = Field(default=1.0, gt=0, le=3600)

    graphql_max_depth: int = Field(default=8, ge=6, le=50)
    gc_gen0_threshold: int = Field(
        default=5_000,
        ge=0,
        le=10_000_000,
        description="Long-running commands (serve, project) collect cyclic garbage after this"
        " many net allocations of tracked objects (Python's default is 700; 0 leaves it).",
    )
    gil_switch_interval_ms: float = Field(
        default=1.0,
        ge=0,
        le=100,
        description="Long-running commands (serve, project) ask a thread holding the GIL to"
        " hand it over after this long when another waits (Python's default is 5; 0 leaves it).",
    )
    otel_telemetry: bool = Field(
        default=False,
        description="FastAPI's built-in OpenTelemetry (traces, metrics, logs) per request.",
    )

    # ---- payments ----
    psp_sandbox_url: str | None = Field(
        default=None, description="The sandbox PSP's address (zenith, ramp, monnify)."
    )
    psp_sandbox_secret: SecretStr | None = Field(
        default=None, description="The sandbox's webhook secret (whsec_...); asked of it if unset."
    )
    psp_sandbox_autostart: bool = Field(
        default=False,
        description="`ledger serve` starts the sandbox PSP itself when no URL is set.",
    )
    psp_sandbox_port: int = Field(default=8100, ge=1, le=65535)
    stripe_api_key: SecretStr | None = Field(default=None, description="Enables Stripe.")
    stripe_api_base: str | None = Field(default=None, description="e.g. a localstripe URL.")
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_version: str | None = Field(
        default=None, description="Pin Stripe's API version (localstripe needs 2024-06-20)."
    )
    payment_routing: str | None = Field(
        default=None, description="Routing rules as JSON (docs/payments.md); unset: by cost."
    )
    payment_max_attempts: int = Field(default=4, ge=1, le=20)
    payment_call_timeout_s: float = Field(default=5.0, gt=0, le=120)
    payment_budget_s: float = Field(default=20.0, gt=0, le=600)
    payment_worker_interval_s: float = Field(default=2.0, gt=0, le=3600)
    payment_resume_after_s: float = Field(
        default=10.0, gt=0, le=86_400, description="Resume payments untouched this long."
    )

    @field_validator(
        "database_url",
        "psp_sandbox_url",
        "psp_sandbox_secret",
        "stripe_api_key",
        "stripe_api_base",
        "stripe_webhook_secret",
        "stripe_api_version",
        "payment_routing",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value in ("", None) else value

    def database_url_value(self) -> str | None:
        return self.database_url.get_secret_value() if self.database_url else None
