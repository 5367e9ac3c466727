"""/docs and /redoc work without internet: the pages and every asset they reference come from
the service itself (the ``fastapi-offline`` package's Swagger UI and ReDoc builds), so they
render on a network that reaches nothing but the service."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import pytest
from fastapi.testclient import TestClient

from tests.integration import test_api as _api

api_bundle_dir = _api.api_bundle_dir
api_store = _api.api_store
snapshot = _api.snapshot
client = _api.client

#: Attributes and script settings through which a page loads something.
_REFS = re.compile(r"""(?:\b(?:src|href|spec-url)\s*=\s*|\burl:\s*)["']([^"']+)["']""")
_CSS_URL = re.compile(r"""url\(\s*["']?([^"')]+)["']?\s*\)""")


def _same_origin(ref: str) -> bool:
    parts = urlsplit(ref)
    return not parts.scheme and not parts.netloc


@pytest.mark.parametrize(("page", "needs"), [
    ("/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "openapi.json"}),
    ("/redoc", {"redoc.standalone.js", "openapi.json"}),
])
def test_docs_pages_and_their_assets_come_from_the_service(client: TestClient, page: str,
                                                           needs: set[str]) -> None:
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert "http://" not in html and "https://" not in html, "a URL to another host"
    refs = _REFS.findall(html)
    assert {ref.rsplit("/", 1)[-1] for ref in refs} >= needs, refs
    for ref in refs:
        assert _same_origin(ref), ref
        asset = client.get(urljoin(page, ref))
        assert asset.status_code == 200, ref
        assert len(asset.content) > 0, ref
        if ref.endswith(".css"):
            for inner in _CSS_URL.findall(asset.text):
                assert inner.startswith("data:") or _same_origin(inner), inner
                if not inner.startswith("data:"):
                    assert client.get(urljoin(ref, inner)).status_code == 200, inner
        if ref.endswith(".js"):
            assert "javascript" in asset.headers["content-type"], ref
    assert "googleapis" not in html and "jsdelivr" not in html
