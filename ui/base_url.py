"""Tell Streamlit's frontend where the server is, so that a link straight to a page asks nothing under it.

Streamlit's frontend guesses the server's base path from the page's address: opened at
``/attention`` it first tries ``/attention/_stcore/health`` and ``/attention/_stcore/host-config``
(two 404s in the browser console on every deep link, streamlit/streamlit#7074), then ``/``.
It takes the base from ``window.__streamlit.BACKEND_BASE_URL`` when the page sets it, so this ASGI
middleware adds that one line to the HTML page the server sends (the server's root, plus
``server.baseUrlPath`` when one is set). ``app.py`` installs it (``streamlit run app.py`` serves the
app through ``st.App`` with this middleware); a page's own requests are untouched.
"""

from __future__ import annotations

import json

SCRIPT = '<script>window.__streamlit = Object.assign(window.__streamlit || {}, {BACKEND_BASE_URL: window.location.origin + %s});</script>'


def base_script(base_path: str = "") -> bytes:
    base = "/" + base_path.strip("/")
    base = base if base.endswith("/") else base + "/"
    return (SCRIPT % json.dumps(base)).encode()


class BaseUrlMiddleware:
    """Adds ``base_script`` at the top of every (unencoded) ``text/html`` answer to a GET."""

    def __init__(self, app, base_path: str | None = None) -> None:
        self.app = app
        self._base_path = base_path

    def _script(self) -> bytes:
        base = self._base_path
        if base is None:
            from streamlit import config

            base = config.get_option("server.baseUrlPath") or ""
        return base_script(base)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "GET":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", [])
        if any(k == b"accept" and b"text/html" in v for k, v in headers):
            # A page load: ask for the plain body (the server would gzip it) so it can be edited.
            scope = dict(scope, headers=[(k, v) for k, v in headers if k != b"accept-encoding"])
        held: dict = {}

        async def send_edited(message):
            if message["type"] == "http.response.start":
                kind = dict(message.get("headers", [])).get(b"content-type", b"")
                encoded = any(k == b"content-encoding" for k, _ in message.get("headers", []))
                if kind.startswith(b"text/html") and not encoded:
                    held["start"], held["body"] = message, b""
                    return
            elif message["type"] == "http.response.body" and "start" in held:
                held["body"] += message.get("body", b"")
                if message.get("more_body"):
                    return
                body = held["body"].replace(b"<head>", b"<head>" + self._script(), 1)
                start = held.pop("start")
                kept = [(k, v) for k, v in start.get("headers", []) if k not in (b"content-length", b"etag")]
                await send({**start, "headers": kept + [(b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, send_edited)
