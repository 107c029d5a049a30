"""Service settings, read from the environment (``MARKETPLACE_*``) once at start-up."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the API; e.g. ``MARKETPLACE_MODEL_ALIAS=staging``."""

    model_config = SettingsConfigDict(env_prefix="MARKETPLACE_", frozen=True)

    # Where the registry lives; unset: MLFLOW_TRACKING_URI, else the project's mlflow.db.
    tracking_uri: str | None = None
    model_name: str = "marketplace-combined"
    model_alias: str = "production"
    # Bearer token for /admin/*; unset disables them (403).
    admin_token: SecretStr | None = None
    # Check the alias every this many seconds and reload when it moved; 0 = only on request.
    poll_interval_s: float = Field(0.0, ge=0)

    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1024)  # whole request body
    max_image_pixels: int = Field(40_000_000, ge=1)  # width x height, checked before decoding
    max_text_chars: int = Field(5_000, ge=1)
    default_k: int = Field(10, ge=1)
    max_k: int = Field(100, ge=1)
    # torch intra-op threads for the encoders; 0 leaves torch's default (all cores).
    torch_threads: int = Field(0, ge=0)
    # FAISS OpenMP threads; one query at a time gains nothing from more, and waking a
    # thread team per request costs more than a 7k-product exact search.
    faiss_threads: int = Field(1, ge=1)
    # /predict requests that arrive together share one forward pass, up to this many
    # (serving/batching.py); 1 = one pass per request.
    predict_batch_size: int = Field(8, ge=1)
    # How long the first request of a batch waits for others to join (milliseconds).
    predict_batch_wait_ms: float = Field(3.0, ge=0, le=100)

    # Live listings (PUT/DELETE /products/{id}): their own bearer token; unset disables
    # the writes (403). Reads and similar products need none.
    catalogue_token: SecretStr | None = None
    # The catalogue log (a SQLAlchemy URL); unset: live/catalogue.db (MARKETPLACE_LIVE_DIR).
    catalogue_url: str | None = None
    # Follow the log (what other API processes acknowledged) every this many seconds.
    catalogue_poll_s: float = Field(0.5, gt=0, le=60)
    # Watching production (serving/watch.py). Every /predict and /similar answer goes to
    # the prediction log, written off the hot path in batches.
    prediction_log: bool = True
    # Where; unset: marketplace.core.db.default_url("prediction_log") (live/predictions.db).
    prediction_log_url: str | None = None
    # Rows waiting to be written; a full queue drops rows (counted on /metrics, logged).
    prediction_log_queue: int = Field(10_000, ge=1)
    # The writer commits at least this often (a kill -9 loses at most this much).
    prediction_log_flush_s: float = Field(1.0, gt=0, le=10)
    # Build and write the rows in a child process (false: a thread of the API process).
    prediction_log_process: bool = True
    # Live accuracy (/metrics) over the last this many feedback categories per version/kind.
    live_accuracy_window: int = Field(500, ge=1)
    # A second version scoring the same /predict requests after the answer (e.g. challenger).
    shadow_alias: str | None = None
    # This share of clients (sticky, by a hash of their key) is answered by the canary
    # alias: canary_alias, else shadow_alias, else "challenger".
    canary_percent: float = Field(0.0, ge=0, le=100)
    canary_alias: str | None = None
    # A client's key: this header when sent, else its address; stored hashed (with the salt).
    client_header: str = "X-Client-ID"
    client_key_salt: SecretStr = SecretStr("")

    @property
    def canary_model_alias(self) -> str | None:
        """The alias canary clients get, or ``None`` when no canary is configured."""
        if self.canary_percent <= 0:
            return None
        return self.canary_alias or self.shadow_alias or "challenger"
