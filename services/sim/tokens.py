"""JWT (HS256) access tokens, enough for a faithful 401."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Tokens:
    def __init__(self, ttl_s: float):
        self.secret = secrets.token_bytes(32)
        self.ttl_s = ttl_s
        self.valid_after = 0.0

    def issue(self, user: str) -> str:
        now = time.time()
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = _b64(json.dumps({"sub": user, "iat": now, "exp": int(now + self.ttl_s),
                                "jti": secrets.token_hex(8)}).encode())
        sig = _b64(hmac.new(self.secret, f"{head}.{body}".encode(), hashlib.sha256).digest())
        return f"{head}.{body}.{sig}"

    def check(self, token: str | None) -> str | None:
        """The user name of a valid token, else None."""
        if not token:
            return None
        try:
            head, body, sig = token.split(".")
            good = _b64(hmac.new(self.secret, f"{head}.{body}".encode(), hashlib.sha256).digest())
            if not hmac.compare_digest(good, sig):
                return None
            claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            if claims["exp"] <= time.time() or claims["iat"] <= self.valid_after:
                return None
            return claims["sub"]
        except Exception:
            return None

    def expire_all(self) -> None:
        self.valid_after = time.time()
