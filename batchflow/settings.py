"""Settings: command-line flags, then BATCHFLOW_* environment variables, then `.env`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .spec.units import Duration, Size


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BATCHFLOW_", env_file=".env", extra="ignore")

    state: str | None = Field(
        None,
        description="State store: a folder or gs:// / s3:// URL; default: the project's (batchflow.yaml), "
        "else .batchflow/ in the spec's folder.",
    )
    api_base_url: str | None = Field(
        None, description="Base URL of the Gemini API, e.g. the emulator's http://127.0.0.1:8765."
    )
    api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("GEMINI_API_KEY", "GOOGLE_API_KEY", "BATCHFLOW_API_KEY"),
        description="Gemini API key; never printed or stored.",
    )
    http_attempts: int = Field(
        5, ge=1, le=20, description="Tries per API call answered 408, 429 or 5xx (backing off from 1 s)."
    )
    validate_max_bytes: Size = Field(
        64 * 1024**2,
        ge=0,
        description="`validate` renders every record of local sources up to this size (default 64MB); "
        "of larger ones, the first 10,000.",
    )
    lock_ttl: Duration = Field(
        300.0,
        ge=1,
        description="How long a pipeline's lock lasts unless its apply renews it (every third of it); "
        "an expired lock is taken over from any host. Default 5m.",
    )
    lock_timeout: Duration = Field(
        0.0, ge=0, description="How long apply waits for a lock another apply holds; default: no wait."
    )
    poll_interval: float = Field(
        30.0,
        gt=0,
        description="Longest wait between polls of running jobs with `apply --wait`, seconds.",
    )
    backend: Literal["gemini", "vertex"] = Field(
        "gemini", description="Where jobs run: the Gemini Developer API, or Vertex AI batch prediction."
    )
    vertex_project: str | None = Field(
        None,
        validation_alias=AliasChoices("BATCHFLOW_VERTEX_PROJECT", "GOOGLE_CLOUD_PROJECT"),
        description="Google Cloud project of the Vertex AI backend.",
    )
    vertex_location: str = Field(
        "us-central1",
        validation_alias=AliasChoices("BATCHFLOW_VERTEX_LOCATION", "GOOGLE_CLOUD_LOCATION"),
        description="Region of the Vertex AI backend.",
    )
    prices: Path | None = Field(
        None,
        description="A price table (YAML or JSON) whose models override or extend the shipped one, "
        "e.g. for negotiated prices or a new model.",
    )

    @field_validator("state")
    @classmethod
    def _state_not_blank(cls, value: str | None) -> str | None:
        # A CI variable that was never set expands to an empty string: taken for "unset", it
        # put the state in a throwaway checkout, and every run paid for everything again.
        if value is not None and not value.strip():
            raise ValueError("is set but empty; name a folder or a gs:// or s3:// URL, or unset it")
        return value
