"""What the reliability tests share with the service tests (``tests.utils``), and their small limits."""

from __future__ import annotations

from tests.utils.app import make_settings, wait_ready
from tests.utils.toys import TOY_THETA, export_toy

__all__ = ["SMALL_LIMITS", "TOY_THETA", "export_toy", "make_settings", "wait_ready"]

# Limits small enough that the hostile cases meet them cheaply.
SMALL_LIMITS = {
    "max_body_bytes": 300_000,
    "max_image_pixels": 2_000_000,
    "max_batch_files": 4,
    "max_rectify_side": 512,
}
