"""The workbench in a browser: textual-serve behind a loopback bind, a one-time URL token and a session cookie."""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import urlsplit

import aiohttp_jinja2
from aiohttp import web
from textual_serve.server import Server, to_int

COOKIE = "rmx_session"
"""The cookie a browser gets in exchange for the URL token; every page and the app's websocket need it."""


def origin_matches(request: web.Request) -> bool:
    """A browser names the page that opened a websocket in Origin: only this server's own page may drive the app."""
    origin = request.headers.get("Origin")
    return origin is None or urlsplit(origin).netloc == request.host


class WorkbenchServer(Server):
    """textual-serve's server with access control: each browser tab runs `command` (the TUI on the daemon).

    textual-serve itself lets anyone who reaches the port run the app. Here the port is loopback unless the user
    says otherwise, and a request must carry the token printed at start (once, in the URL) or the cookie that
    URL sets, so another user of a shared GPU node cannot open the workbench through 127.0.0.1.
    """

    def __init__(self, command: str, host: str, port: int, token: str | None = None) -> None:
        super().__init__(command, host=host, port=port, title="rmx")
        self.token = token or secrets.token_urlsafe(24)

    @property
    def url(self) -> str:
        """The address to open, token included (the host as the browser on this node reaches it)."""
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}/?token={self.token}"

    def _authorized(self, request: web.Request) -> bool:
        return hmac.compare_digest(request.cookies.get(COOKIE, ""), self.token)

    @web.middleware
    async def _require_token(self, request: web.Request, handler) -> web.StreamResponse:
        if request.path.startswith("/static/"):  # textual-serve's own JS, CSS and fonts: nothing of the user's
            return await handler(request)
        if request.path == "/" and hmac.compare_digest(request.query.get("token", ""), self.token):
            # Trade the token for a cookie and drop it from the address bar (and from the browser's history).
            kept = {key: value for key, value in request.query.items() if key != "token"}
            response = web.HTTPFound(request.rel_url.with_query(kept))
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="Strict")
            raise response
        if not self._authorized(request):
            raise web.HTTPForbidden(text="rmx serve: open the URL with the token that `rmx serve` printed\n")
        if request.path == "/ws" and not origin_matches(request):
            raise web.HTTPForbidden(text="rmx serve: cross-origin websocket refused\n")
        return await handler(request)

    async def _make_app(self) -> web.Application:
        app = await super()._make_app()
        app.middlewares.append(self._require_token)
        return app

    async def on_startup(self, app: web.Application) -> None:
        # textual-serve prints a banner; rmx prints the URL (token included) once, from the command.
        return None

    @aiohttp_jinja2.template("app_index.html")
    async def handle_index(self, request: web.Request) -> dict[str, Any]:
        """textual-serve's page, with URLs on the host the browser used: through `ssh -L 9000:localhost:8000`
        that is localhost:9000, and the session cookie is only sent back to the host that set it."""
        base = f"{request.scheme}://{request.host}"
        websocket = ("wss:" if request.scheme == "https" else "ws:") + f"//{request.host}/ws"
        return {
            "font_size": to_int(request.query.get("fontsize", "16"), 16),
            "app_websocket_url": websocket,
            "config": {"static": {"url": f"{base}/static/"}},
            "application": {"name": self.title},
        }
