"""Navigation: page files numbered without gaps, grouped in sections, each page at its own path; the root moves on
to the first page; the HTML page tells the browser the server's base path (no 404s under a deep link)."""

from __future__ import annotations

import asyncio
import json

from streamlit.testing.v1 import AppTest

from app_testkit import APP
from ui import navigation
from ui.base_url import BaseUrlMiddleware, base_script


def test_page_files_are_numbered_one_to_n_without_gaps():
    numbers = [int(p.name.split("_", 1)[0]) for p in navigation.page_files()]
    assert numbers == list(range(1, len(numbers) + 1)), numbers


def test_every_listed_page_exists_and_sections_follow_the_numbering():
    present = {navigation.words(p) for p in navigation.page_files()}
    listed = [w for members in navigation.SECTIONS.values() for w in members]
    assert set(listed) <= present, sorted(set(listed) - present)
    order = [navigation.words(p) for p in navigation.page_files() if navigation.words(p) in listed]
    assert order == listed, "each section's pages must be consecutive files, in the sections' order"
    assert len(navigation.sectioned_files()) >= 5


def test_page_file_resolves_words_to_the_numbered_file():
    path = navigation.page_file("Attention")
    assert path.startswith("app_pages/") and path.endswith("_Attention.py")
    assert (navigation.PAGES_DIR.parent / path).exists()


def test_root_moves_on_to_the_first_page_and_keeps_the_query(app_settings):
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["prompt"] = "The cat sat"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Prompt & predictions"
    assert at.query_params["prompt"] in ("The cat sat", ["The cat sat"])


def _serve(middleware, body: bytes, content_type: bytes, accept: bytes = b"text/html"):
    sent, seen_headers = [], {}

    async def inner(scope, receive, send):
        seen_headers.update(dict(scope["headers"]))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body[:10], "more_body": True})
        await send({"type": "http.response.body", "body": body[10:]})

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/attention",
             "headers": [(b"accept", accept), (b"accept-encoding", b"gzip")]}
    asyncio.run(middleware(inner)(scope, None, send))
    out = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0], out, seen_headers


def test_html_pages_get_the_base_url_script_and_a_matching_length():
    page = b"<!DOCTYPE html><html><head><title>x</title></head><body></body></html>"
    start, out, seen = _serve(lambda app: BaseUrlMiddleware(app, base_path=""), page, b"text/html; charset=utf-8")
    assert out == page.replace(b"<head>", b"<head>" + base_script(""), 1)
    assert dict(start["headers"])[b"content-length"] == str(len(out)).encode()
    assert b"accept-encoding" not in seen  # asked unencoded so that it can be edited
    assert b'BACKEND_BASE_URL: window.location.origin + "/"' in out


def test_other_answers_pass_untouched_and_base_path_is_kept():
    data = json.dumps({"a": "<head>"}).encode()
    _, out, seen = _serve(lambda app: BaseUrlMiddleware(app, base_path=""), data, b"application/json", accept=b"*/*")
    assert out == data and seen[b"accept-encoding"] == b"gzip"
    assert b'"/lab/"' in base_script("/lab") and b'"/lab/"' in base_script("lab/")
