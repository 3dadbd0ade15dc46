"""Container health check: exit 0 when the service answers 200 on /v2/health/ready, else 1.

The image's HEALTHCHECK and compose.yaml run it as ``python /opt/stn/healthcheck.py``. It uses the
standard library alone, so the slim image needs no curl. The port comes from ``STN_PORT`` (default 8000),
the same variable the service reads; the URL can be overridden with ``STN_HEALTHCHECK_URL``.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def ready_url() -> str:
    url = os.environ.get("STN_HEALTHCHECK_URL")
    if url:
        return url
    return f"http://127.0.0.1:{os.environ.get('STN_PORT', '8000')}/v2/health/ready"


def check(url: str, timeout_s: float = 4.0) -> tuple[bool, str]:
    """(healthy, what happened) for one GET of ``url``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 (local http only)
            return resp.status == 200, f"{url}: {resp.status}"
    except urllib.error.HTTPError as e:  # 503 while models load
        return False, f"{url}: {e.code}"
    except (urllib.error.URLError, OSError) as e:
        return False, f"{url}: {e}"


def main() -> int:
    ok, detail = check(ready_url())
    # Docker keeps the last lines of a check's output in `docker inspect`; say what happened.
    sys.stdout.write(detail + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
