"""The interactive API reference at `/api/v1/docs`: Swagger UI served by this server itself.

FastAPI's default page loads Swagger UI from a CDN, so it is blank on a host without internet. The
assets here come from the `fastapi-offline` package on PyPI (it ships swagger-ui-dist 5's bundle and
stylesheet), mounted as static files under `/api/v1/docs/assets`. The page carries its own Content
Security Policy: scripts only from this origin plus FastAPI's one inline start-up script, allowed
by a nonce made per response; no other host is contacted (Swagger UI's online validator is off).
ReDoc is not offered.
"""

from __future__ import annotations

import secrets
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["ASSETS_DIR", "install"]

ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))
SWAGGER_JS, SWAGGER_CSS, FAVICON = "swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"
_INLINE_SCRIPT = "<script>"


def content_security_policy(nonce: str) -> str:
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src 'self' 'nonce-{nonce}'",
            "style-src 'self' 'unsafe-inline'",  # Swagger UI sets style attributes
            "img-src 'self' data:",  # its stylesheet draws icons as data: SVGs
            "font-src 'self' data:",
            "connect-src 'self'",  # the OpenAPI document and "Try it out"
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def install(app: FastAPI, *, docs_url: str, openapi_url: str) -> None:
    """Serve the page at `docs_url` and its assets below it (create the app with docs_url=None)."""
    assets_url = f"{docs_url}/assets"
    app.mount(assets_url, StaticFiles(directory=ASSETS_DIR), name="docs-assets")

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        page = get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{assets_url}/{SWAGGER_JS}",
            swagger_css_url=f"{root}{assets_url}/{SWAGGER_CSS}",
            swagger_favicon_url=f"{root}{assets_url}/{FAVICON}",
            swagger_ui_parameters={"validatorUrl": None},  # else it asks validator.swagger.io
        )
        nonce = secrets.token_urlsafe(16)
        html = bytes(page.body).decode().replace(_INLINE_SCRIPT, f'<script nonce="{nonce}">')
        headers = {
            "Content-Security-Policy": content_security_policy(nonce),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",  # the nonce is per response
        }
        return HTMLResponse(html, headers=headers)
