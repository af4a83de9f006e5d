"""Hand-made HS256 JWTs for the refusal tests (stdlib only)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(claims: dict, secret: str) -> str:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(claims).encode())
    signing_input = f"{header}.{payload}".encode()
    sig = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(sig)}"


def forged(sub: str) -> str:
    """A well-formed token for `sub` signed with the wrong secret."""
    return make_jwt({"sub": sub, "exp": int(time.time()) + 3600}, "not-the-gateway-secret-0123456789abcdef")


def expired(sub: str, secret: str) -> str:
    """A token for `sub` with the right secret that expired an hour ago."""
    now = int(time.time())
    return make_jwt({"sub": sub, "iat": now - 7200, "exp": now - 3600}, secret)
