"""The ceiling for the API benchmark: a minimal FastAPI app on the same stack as VoidVM.

One route, `GET /api/v1/vms`, returns a JSON document read from a file (VoidVM's own answer to the
same request, so the size and the serialisation work match) through a `JSONResponse`, served by
uvicorn with the settings `voidvm-server serve` uses. No auth, no database, no middleware.
Run: .venv/bin/python -m bench.ceiling_app --port 8000 --payload answer.json
"""

from __future__ import annotations

import argparse
import json
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--payload", type=Path, required=True)
    args = parser.parse_args()
    payload = json.loads(args.payload.read_text())
    uvicorn.run(
        create_app(payload),
        host="127.0.0.1",
        port=args.port,
        log_config=None,
        ws_max_size=64 * 1024,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
