"""Who may use the service: API tokens (hashed at rest, scoped) and operator logins.

Every function runs inside the caller's transaction and never commits (``with Session.begin()``).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from db.models import ApiToken, User, utcnow

SCOPES = ("submit", "read", "admin")  # admin implies the others
TOKEN_PREFIX = "bs_"
TOKEN_BYTES = 32  # random bytes: far beyond guessing, so a fast hash at rest is enough
PREFIX_LENGTH = 8
LAST_USED_RESOLUTION = timedelta(minutes=1)  # write last_used_at at most this often per token


@functools.cache
def _dummy_password_hash() -> str:
    # checked when the username is unknown, so that both refusals take as long
    return generate_password_hash(secrets.token_urlsafe(16))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _parse_scopes(scopes: str | Iterable[str]) -> str:
    names = scopes.split(",") if isinstance(scopes, str) else list(scopes)
    wanted = {name.strip() for name in names if name.strip()}
    unknown = wanted - set(SCOPES)
    if not wanted or unknown:
        raise ValueError(f"scopes must be a non-empty subset of {', '.join(SCOPES)}; got {sorted(wanted)}")
    return ",".join(scope for scope in SCOPES if scope in wanted)


def create_token(*, session: Session, name: str, scopes: str | Iterable[str]) -> tuple[str, ApiToken]:
    """A new token: its text (shown once, never stored) and its row (hash, prefix, scopes)."""
    text = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    token = ApiToken(name=name, prefix=text[:PREFIX_LENGTH], secret_hash=_digest(text),
                     scopes=_parse_scopes(scopes))
    session.add(token)
    session.flush()
    return text, token


def verify_token(*, session: Session, token: str, note_use: bool = True) -> ApiToken | None:
    """The live token row matching `token`, or None (unknown or revoked); notes when it was used
    (at most once per LAST_USED_RESOLUTION) unless note_use is False, when it only reads."""
    digest = _digest(token)
    candidates = session.scalars(select(ApiToken).where(ApiToken.prefix == token[:PREFIX_LENGTH]))
    match = next((c for c in candidates if hmac.compare_digest(c.secret_hash, digest)), None)
    if match is None or match.revoked_at is not None:
        return None
    if note_use and last_use_is_stale(match):
        note_token_used(session=session, token_id=match.id)
    return match


def last_use_is_stale(token: ApiToken) -> bool:
    """Whether the token's last_used_at is old enough to be written again."""
    return token.last_used_at is None or utcnow() - token.last_used_at >= LAST_USED_RESOLUTION


def note_token_used(*, session: Session, token_id: int) -> None:
    """Set the token's last_used_at to now."""
    session.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=utcnow()))
    session.flush()


def revoke_token(*, session: Session, token_id: int) -> bool:
    """Revoke a token; False when there is no such token or it was already revoked."""
    token = session.get(ApiToken, token_id)
    if token is None or token.revoked_at is not None:
        return False
    token.revoked_at = utcnow()
    session.flush()
    return True


def list_tokens(*, session: Session, include_revoked: bool = True) -> list[ApiToken]:
    """Tokens newest first (only prefixes and hashes: the token texts are not stored)."""
    stmt = select(ApiToken).order_by(ApiToken.id.desc())
    if not include_revoked:
        stmt = stmt.where(ApiToken.revoked_at.is_(None))
    return list(session.scalars(stmt))


def token_has_scope(token: ApiToken, scope: str) -> bool:
    """Whether `token` grants `scope` (admin grants every scope)."""
    granted = set(token.scopes.split(","))
    return "admin" in granted or scope in granted


def create_user(*, session: Session, username: str, password: str) -> User:
    """A new operator login; a taken username raises IntegrityError at flush."""
    if not username or not password:
        raise ValueError("username and password must not be empty")
    user = User(username=username, password_hash=generate_password_hash(password))
    session.add(user)
    session.flush()
    return user


def set_password(*, session: Session, username: str, password: str) -> bool:
    """Replace a user's password; False when there is no such user."""
    if not password:
        raise ValueError("password must not be empty")
    user = session.scalars(select(User).where(User.username == username)).first()
    if user is None:
        return False
    user.password_hash = generate_password_hash(password)
    session.flush()
    return True


def verify_user(*, session: Session, username: str, password: str) -> User | None:
    """The enabled user with this username and password, or None."""
    user = session.scalars(select(User).where(User.username == username)).first()
    if user is None:
        check_password_hash(_dummy_password_hash(), password)
        return None
    if not check_password_hash(user.password_hash, password) or user.disabled:
        return None
    return user
