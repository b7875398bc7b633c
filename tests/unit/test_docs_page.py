"""`/api/v1/docs` works on a host without internet: every script, stylesheet and icon the page uses is
served by the app itself, and nothing in the page points at another host."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

from tests.conftest import Api

DOCS = "/api/v1/docs"
EXPECTED_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


class _Page(HTMLParser):
    """The URLs a page loads (script src, link href, img src) and its inline scripts' nonces."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_nonces: list[str | None] = []
        self.external_scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "href"):
            if values.get(name):
                self.urls.append(str(values[name]))
        if tag == "script":
            if values.get("src"):
                self.external_scripts += 1
            else:
                self.inline_nonces.append(values.get("nonce"))


async def test_docs_page_loads_only_assets_the_app_serves_itself(api: Api) -> None:
    page = await api.client.get(DOCS)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    parsed = _Page()
    parsed.feed(page.text)
    assert parsed.external_scripts == 1 and len(parsed.urls) == 3, parsed.urls  # js, css, icon

    for url in parsed.urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and url.startswith("/"), url
        asset = await api.client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 0, url
        suffix = parts.path[parts.path.rfind(".") :]
        assert EXPECTED_TYPES[suffix] in asset.headers["content-type"], (url, asset.headers)

    # No other host anywhere in the page, not even as text (Swagger UI's online validator is off).
    assert not re.search(r"(?:https?:)?//[\w.-]+", page.text.replace("<!--", "").replace("-->", ""))
    assert '"validatorUrl": null' in page.text

    # The OpenAPI document the page's start-up script loads is served too.
    spec_url = re.search(r"url: '([^']+)'", page.text)
    assert spec_url is not None and spec_url.group(1) == "/api/v1/openapi.json"
    assert (await api.client.get(spec_url.group(1))).json()["info"]["title"] == "VoidVM API"


async def test_docs_page_allows_only_its_own_scripts_and_its_nonced_start_up_script(api: Api) -> None:
    page = await api.client.get(DOCS)
    directives = [d.partition(" ") for d in page.headers["content-security-policy"].split("; ")]
    policy = {name: value for name, _, value in directives}
    parsed = _Page()
    parsed.feed(page.text)
    assert len(parsed.inline_nonces) == 1 and parsed.inline_nonces[0]
    assert policy["script-src"] == f"'self' 'nonce-{parsed.inline_nonces[0]}'"
    assert policy["default-src"] == "'none'" and policy["connect-src"] == "'self'"
    again = await api.client.get(DOCS)
    assert again.headers["content-security-policy"] != page.headers["content-security-policy"]
