"""R_empty: the cheapest FastAPI service, to measure what HTTP alone costs on this machine.

One ``POST /v1/predict`` that reads the whole body and answers a small JSON, served by uvicorn with the
settings ``service.server.serve`` passes (same workers, event loop and HTTP implementation: uvicorn's
``auto`` choice for both, no access log, no server header, lifespan on).

    python -m bench._empty_app --port 8001 [--workers N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request

app = FastAPI()


@app.post("/v1/predict")
async def predict(request: Request) -> dict[str, int]:
    body = await request.body()
    return {"bytes": len(body)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args()
    # An import string (not the object) so that --workers > 1 works as it does for stn-serve.
    uvicorn.run(
        "_empty_app:app",
        app_dir=str(Path(__file__).resolve().parent),
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
        lifespan="on",
        server_header=False,
    )


if __name__ == "__main__":
    main()
