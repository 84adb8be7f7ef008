"""The local stack's JWT secret and the anon / service-role keys signed with it."""

from __future__ import annotations

import secrets
import time

import jwt

TEN_YEARS = 10 * 365 * 24 * 3600


def new_jwt_secret() -> str:
    return secrets.token_urlsafe(48)


def sign_role_key(secret: str, role: str) -> str:
    """A long-lived API key for `role`, shaped like a Supabase project's keys."""
    now = int(time.time())
    claims = {"iss": "supabase-local", "role": role, "iat": now, "exp": now + TEN_YEARS}
    return jwt.encode(claims, secret, algorithm="HS256")
