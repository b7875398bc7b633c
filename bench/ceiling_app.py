"""The ceiling for the API benchmark: a minimal FastAPI app on the same stack as VoidVM.

One route, `GET /api/v1/vms`, returns a JSON document read from a file (VoidVM's own answer to the
same request, so the size and the serialisation work match) through a `JSONResponse`, served by
uvicorn with the settings `voidvm-server serve` uses, with as many worker processes as VoidVM's
`serve` is given. No auth, no database, no middleware.
Run: .venv/bin/python -m bench.ceiling_app --port 8000 --payload answer.json [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse


def create_app(payload: dict[str, Any]) -> FastAPI:
    app = FastAPI()

    @app.get("/api/v1/vms")
    async def list_vms() -> JSONResponse:
        return JSONResponse(payload)

    @app.get("/api/v1/health")
    async def health() -> JSONResponse:
        return JSONResponse({"success": True, "data": {"status": "ok"}})

    return app


def from_environment() -> FastAPI:
    """The app for each uvicorn worker process: the payload's path comes in the environment."""
    return create_app(json.loads(Path(os.environ["VOIDVM_CEILING_PAYLOAD"]).read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--payload", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    os.environ["VOIDVM_CEILING_PAYLOAD"] = str(args.payload.resolve())
    uvicorn.run(
        "bench.ceiling_app:from_environment",
        factory=True,
        workers=args.workers,
        host="127.0.0.1",
        port=args.port,
        log_config=None,
        ws_max_size=64 * 1024,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
