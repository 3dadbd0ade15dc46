"""The one settings object of the service: environment variables with the prefix ``STN_``, overridden by
``stn-serve`` flags (the CLI passes its flags as init arguments, which win over the environment).

Validators run when the object is built, so a bad value stops the process at start-up, not on the first
request.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL_REPOSITORY = PACKAGE_DIR / "model_repository"

Provider = Literal["auto", "cuda", "cpu"]
LogFormat = Literal["text", "json"]


class Settings(BaseSettings):
    """Everything the service can be told. Each field is also ``STN_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="STN_", extra="ignore", protected_namespaces=())

    # Models
    model_repository: Path = Field(
        default=DEFAULT_MODEL_REPOSITORY, description="Triton-layout model repository"
    )
    default_model: str = Field(
        default="stn_photo", description="model behind /v1/predict (first alphabetically if absent)"
    )
    provider: Provider = Field(
        default="auto", description="auto: CUDA if it works, else CPU; cuda: GPU or refuse"
    )
    cuda_device_id: int = Field(default=0, ge=0, description="GPU index for the CUDA provider")
    intra_op_threads: int = Field(default=0, ge=0, description="onnxruntime intra-op threads; 0 = all cores")
    inference_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="niceness of the inference threads (Linux), so they never preempt the HTTP event loop; 0: none",
    )
    warmup: bool = Field(
        default=True, description="run each model at batch 1 and max_batch_size before ready"
    )

    # Server
    host: str = Field(default="127.0.0.1", description="address to bind")
    port: int = Field(default=8000, ge=0, le=65535, description="port to bind")
    workers: int = Field(default=1, ge=1, description="server processes (each loads every model)")
    log_format: LogFormat = Field(default="text", description="log lines as text or JSON")
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="log level")
    access_log: bool = Field(default=False, description="uvicorn access log (one line per request)")
    api_token: SecretStr | None = Field(default=None, description="bearer token required on inference routes")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="origins allowed by CORS: comma-separated or a JSON list"
    )
    opentelemetry: bool = Field(
        default=False,
        description="FastAPI's native OpenTelemetry (traces, metrics, logs to the global providers)",
    )
    graceful_timeout_s: float = Field(
        default=30.0, gt=0, description="how long SIGTERM waits for in-flight requests"
    )

    # Dynamic batching
    max_batch_size: int = Field(default=32, ge=1, description="most images in one onnxruntime run")
    max_queue_delay_us: int = Field(
        default=500, ge=0, description="how long a batch waits to fill, microseconds"
    )
    max_queue_size: int = Field(default=256, ge=1, description="queued requests per model before 503")
    max_concurrent_requests: int = Field(
        default=256, ge=1, description="POST requests in flight (arrival to answer) before 503"
    )
    request_timeout_s: float = Field(default=30.0, gt=0, description="deadline of one request (504 past it)")

    # Limits
    max_body_bytes: int = Field(
        # A 48-megapixel phone JPEG is 12-18 MB.
        default=20 * 1024 * 1024, ge=1, description="request body limit (413 past it)"
    )
    max_image_pixels: int = Field(
        # 48 and 50 MP phone cameras (8064 x 6048, 8160 x 6120) fit.
        default=50_000_000, ge=1, description="decoded image limit, width*height (413)"
    )
    max_batch_files: int = Field(
        default=64, ge=1, description="files in one batch request (400 past it: the schema's maxItems)"
    )
    max_rectify_side: int = Field(default=4096, ge=1, description="largest side of /v1/rectify?size=WxH")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, v: object) -> object:
        # Accept a JSON list or a comma-separated string: STN_CORS_ORIGINS=http://a,http://b
        if isinstance(v, str):
            s = v.strip()
            if s.startswith("["):
                return json.loads(s)
            return [o.strip() for o in s.split(",") if o.strip()]
        return v

    @field_validator("model_repository", mode="after")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return Path(os.path.expanduser(v)).resolve()

    @property
    def token(self) -> str | None:
        return self.api_token.get_secret_value() if self.api_token else None
