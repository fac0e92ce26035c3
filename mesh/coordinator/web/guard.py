"""Who may ask the coordinator's HTTP face: a guard in front of every route.

* Another site's page in the user's browser must not act through it: a request whose
  ``Origin`` (or ``Sec-Fetch-Site``) says it comes from another site may not change
  anything (cross-site request forgery), and a server on a loopback address answers only
  to a loopback ``Host`` (a name of the attacker's resolving to 127.0.0.1, DNS
  rebinding, would otherwise make its page same-origin).
* With a token set (security on), only requests that carry it get through (as a bearer
  token, or the cookie set when the page is opened with ``?token=``), and the health
  check.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from mesh.transport.exposure import is_loopback

__all__ = ["TOKEN_COOKIE", "RequestGuard"]

#: The cookie the page carries the token in.
TOKEN_COOKIE = "mesh_token"
# What needs no token.
_OPEN_PATHS = frozenset({"/api/v1/health"})


def _refusal(status: int, code: str, message: str) -> Response:
    body = {"error": message, "code": code, "field": None}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _hostname(host: str) -> str:
    """The name in a ``Host`` header: ``[::1]:8081`` → ``::1``, ``a:80`` → ``a``."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rpartition(":")[0] if ":" in host else host


class RequestGuard:
    """Passes on to ``app`` the requests this module allows; answers the others."""

    def __init__(self, app: ASGIApp, token: str | None, *, loopback: bool) -> None:
        self._app = app
        self._token = token
        self._loopback = loopback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request = Request(scope)
        refused = self._foreign(request)
        if refused is not None:
            await _refusal(403, "forbidden", refused)(scope, receive, send)
            return
        if self._token is None or scope["path"] in _OPEN_PATHS:
            await self._app(scope, receive, send)
            return
        offered = request.query_params.get("token")
        if offered is not None and scope["path"] == "/" and self._matches(offered):
            # Trade the URL's token for a cookie, and take it out of the address bar.
            response: Response = RedirectResponse("/", status_code=303)
            response.set_cookie(
                TOKEN_COOKIE,
                self._token,
                httponly=True,
                samesite="strict",
                secure=scope.get("scheme") == "https",
            )
            await response(scope, receive, send)
            return
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else None
        given = given or request.cookies.get(TOKEN_COOKIE)
        if given is not None and self._matches(given):
            await self._app(scope, receive, send)
            return
        response = _refusal(
            401,
            "unauthorized",
            "this coordinator requires its HTTP token: open the dashboard with ?token=TOKEN "
            "or send 'Authorization: Bearer TOKEN' (the token is in the keys directory's "
            "http.token)",
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="mesh"'
        await response(scope, receive, send)

    def _foreign(self, request: Request) -> str | None:
        """Why the request looks like it comes from another site, or None."""
        host = request.headers.get("host", "")
        if self._loopback and not is_loopback(_hostname(host)):
            return f"Host {host[:100]!r} is not a loopback address this server answers to"
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return None
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return "a request from another site may not change anything here"
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
            return f"a request from {origin[:100]!r} may not change anything here"
        return None

    def _matches(self, given: str) -> bool:
        assert self._token is not None
        return hmac.compare_digest(given.encode(), self._token.encode())
