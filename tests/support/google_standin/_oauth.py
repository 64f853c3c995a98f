"""Google's OAuth 2.0 endpoints as the stand-in plays them: the authorization endpoint of an
immediately consenting user, the token endpoint (refresh_token and authorization_code with
PKCE) and the revocation endpoint.

References: "Using OAuth 2.0 for Web Server Applications" (authorization request parameters,
code exchange, refresh, revoke) and RFC 7636 (PKCE, S256).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from urllib.parse import parse_qs, urlencode

from ._base import Request, Response, StandInState
from ._errors import ApiError, unauthenticated
from ._model import AccessToken, AuthCode, RefreshToken

CALENDAR_SCOPE = "https://www.googleapis.com/auth/calendar"
CODE_TTL = 600.0


def _json(status: int, body: object, headers: dict[str, str] | None = None) -> Response:
    out = {"Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-store"}
    out.update(headers or {})
    return Response(status, json.dumps(body).encode(), out)


def _oauth_error(status: int, error: str, description: str) -> Response:
    return _json(status, {"error": error, "error_description": description})


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class OAuthEndpoints(StandInState):
    access_token_ttl: int = 3599
    consenting_account: str | None = None

    # tokens -------------------------------------------------------------------------------------

    def _issue_refresh_token(self, email: str, client_id: str, scope: str) -> str:
        token = "1//" + secrets.token_urlsafe(48)
        self._refresh_tokens[token] = RefreshToken(token, email, client_id, scope)
        return token

    def _issue_access_token(
        self, email: str, refresh_token: str | None, scope: str, client_id: str
    ) -> AccessToken:
        token = "ya29." + secrets.token_urlsafe(64)
        access = AccessToken(
            token,
            email,
            refresh_token,
            time.time() + self.access_token_ttl,
            frozenset(scope.split()),
            client_id,
        )
        self._access_tokens[token] = access
        return access

    def _access(self, headers: dict[str, str]) -> AccessToken:
        """The access token of a request's ``Authorization: Bearer`` header, or 401."""
        value = headers.get("authorization")
        if not value:
            raise unauthenticated(missing=True)
        scheme, _, token = value.partition(" ")
        with self._lock:
            access = self._access_tokens.get(token.strip()) if scheme.lower() == "bearer" else None
            if access is None or access.expires_at <= time.time():
                raise unauthenticated(missing=False)
            return access

    def _authenticate(self, headers: dict[str, str]) -> str:
        """The account a request's ``Authorization: Bearer`` token belongs to, or 401."""
        return self._access(headers).email

    def _revoke_refresh_token(self, token: str) -> bool:
        refresh = self._refresh_tokens.get(token)
        if refresh is None or refresh.revoked:
            return False
        refresh.revoked = True
        for key, access in list(self._access_tokens.items()):
            if access.refresh_token == token:
                del self._access_tokens[key]
        return True

    # endpoints ----------------------------------------------------------------------------------

    def _client_ok(self, client_id: str | None, client_secret: str | None) -> bool:
        client = self._clients.get(client_id or "")
        return client is not None and hmac.compare_digest(client.client_secret, client_secret or "")

    def _token_account(self, form: dict[str, str]) -> str | None:
        with self._lock:
            if form.get("grant_type") == "refresh_token":
                refresh = self._refresh_tokens.get(form.get("refresh_token", ""))
                return refresh.email if refresh else None
            code = self._codes.get(form.get("code", ""))
            return code.email if code else None

    def _token_endpoint(self, req: Request) -> Response:
        form = {k: v[-1] for k, v in parse_qs(req.body.decode("utf-8", "replace")).items()}
        fault = self._take_fault("token", self._token_account(form), set())
        if isinstance(fault, ApiError):
            return _oauth_error(fault.code, "internal_failure", fault.message)
        with self._lock:
            grant = form.get("grant_type")
            if not self._client_ok(form.get("client_id"), form.get("client_secret")):
                return _oauth_error(401, "invalid_client", "Unauthorized")
            if grant == "refresh_token":
                return self._refresh_grant(form)
            if grant == "authorization_code":
                return self._code_grant(form)
            return _oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant}")

    def _refresh_grant(self, form: dict[str, str]) -> Response:
        refresh = self._refresh_tokens.get(form.get("refresh_token", ""))
        if refresh is None or refresh.revoked or refresh.client_id != form.get("client_id"):
            return _oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
        access = self._issue_access_token(
            refresh.email, refresh.token, refresh.scope, refresh.client_id
        )
        return _json(
            200,
            {
                "access_token": access.token,
                "expires_in": self.access_token_ttl,
                "scope": refresh.scope,
                "token_type": "Bearer",
            },
        )

    def _code_grant(self, form: dict[str, str]) -> Response:
        code = self._codes.get(form.get("code", ""))
        if code is None or code.used or code.expires_at <= time.time():
            return _oauth_error(400, "invalid_grant", "Malformed auth code.")
        if code.client_id != form.get("client_id"):
            return _oauth_error(400, "invalid_grant", "Unauthorized")
        if code.redirect_uri != form.get("redirect_uri"):
            return _oauth_error(400, "redirect_uri_mismatch", "Bad Request")
        if code.code_challenge is not None:
            verifier = form.get("code_verifier")
            if not verifier:
                return _oauth_error(400, "invalid_grant", "Missing code verifier.")
            if code.code_challenge_method == "S256":
                computed = _b64url(hashlib.sha256(verifier.encode("ascii")).digest())
            else:
                computed = verifier
            if not hmac.compare_digest(computed, code.code_challenge):
                return _oauth_error(400, "invalid_grant", "Invalid code verifier.")
        code.used = True
        body: dict[str, object] = {}
        refresh_token = None
        if code.access_type == "offline":
            refresh_token = self._issue_refresh_token(code.email, code.client_id, code.scope)
        access = self._issue_access_token(code.email, refresh_token, code.scope, code.client_id)
        body = {
            "access_token": access.token,
            "expires_in": self.access_token_ttl,
            "scope": code.scope,
            "token_type": "Bearer",
        }
        if refresh_token is not None:
            body["refresh_token"] = refresh_token
        if "openid" in code.scope.split():
            body["id_token"] = self._id_token(code.email, code.client_id)
        return _json(200, body)

    def _id_token(self, email: str, client_id: str) -> str:
        """An *unsigned* ID token (alg "none"): enough for a client to read the email claim."""
        now = int(time.time())
        header = _b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        claims = {
            "iss": "https://accounts.google.com",
            "aud": client_id,
            "azp": client_id,
            "sub": hashlib.sha256(email.encode()).hexdigest()[:21],
            "email": email,
            "email_verified": True,
            "iat": now,
            "exp": now + 3600,
        }
        return f"{header}.{_b64url(json.dumps(claims).encode())}."

    def _auth_endpoint(self, req: Request) -> Response:
        q = {k: v[-1] for k, v in req.query.items()}
        with self._lock:
            if q.get("client_id") not in self._clients:
                return Response(
                    401, b"Error 401: invalid_client", {"Content-Type": "text/plain; charset=utf-8"}
                )
            redirect_uri = q.get("redirect_uri")
            if not redirect_uri:
                return Response(
                    400,
                    b"Error 400: invalid_request Missing required parameter: redirect_uri",
                    {"Content-Type": "text/plain; charset=utf-8"},
                )
            method = q.get("code_challenge_method", "plain")
            challenge = q.get("code_challenge")
            if challenge is not None and method not in ("S256", "plain"):
                return Response(
                    400,
                    b"Error 400: invalid_request Invalid code_challenge_method",
                    {"Content-Type": "text/plain; charset=utf-8"},
                )
            params: dict[str, str] = {}
            if "state" in q:
                params["state"] = q["state"]
            account = self.consenting_account
            if q.get("response_type") != "code":
                params["error"] = "unsupported_response_type"
            elif account is None or account not in self._accounts:
                params["error"] = "access_denied"
            else:
                code = "4/0" + secrets.token_urlsafe(48)
                requested = (q.get("scope") or CALENDAR_SCOPE).split()
                key = (account, q["client_id"])
                earlier = self._grants.get(key, set())
                # Incremental authorization: with include_granted_scopes=true the new grant
                # also carries what this client was granted before ("Using OAuth 2.0 for Web
                # Server Applications", incremental authorization).
                granted = set(requested)
                if q.get("include_granted_scopes") == "true":
                    granted |= earlier
                self._grants[key] = earlier | set(requested)
                scope = " ".join(sorted(granted))
                self._codes[code] = AuthCode(
                    code=code,
                    email=account,
                    client_id=q["client_id"],
                    redirect_uri=redirect_uri,
                    scope=scope,
                    code_challenge=challenge,
                    code_challenge_method=method,
                    access_type=q.get("access_type", "online"),
                    expires_at=time.time() + CODE_TTL,
                )
                params["code"] = code
                params["scope"] = scope
            sep = "&" if "?" in redirect_uri else "?"
            return Response(302, b"", {"Location": redirect_uri + sep + urlencode(params)})

    def _revoke_endpoint(self, req: Request) -> Response:
        token = req.param("token")
        if token is None and req.body:
            form = parse_qs(req.body.decode("utf-8", "replace"))
            token = form["token"][-1] if form.get("token") else None
        with self._lock:
            if token and self._revoke_refresh_token(token):
                return _json(200, {})
            access = self._access_tokens.pop(token or "", None)
            if access is not None:
                # Revoking an access token revokes the refresh token it came from as well.
                if access.refresh_token:
                    self._revoke_refresh_token(access.refresh_token)
                return _json(200, {})
        return _oauth_error(400, "invalid_token", "Token expired or revoked")
