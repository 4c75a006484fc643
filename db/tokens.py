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

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from db.models import ApiToken, User, utcnow

SCOPES = ("submit", "read", "review", "all-jobs", "admin")  # admin implies the others
OPERATOR_SCOPES = "read,submit"  # a new web login: its own (and its team's) jobs
TOKEN_PREFIX = "bs_"
TOKEN_BYTES = 32  # random bytes: far beyond guessing, so a fast hash at rest is enough
PREFIX_LENGTH = 8
LAST_USED_RESOLUTION = timedelta(minutes=1)  # write last_used_at at most this often per token
TOKEN_LIFETIME = timedelta(days=365)  # default; a script's token is renewed once a year
MAX_TOKEN_LIFETIME = timedelta(days=730)
MIN_PASSWORD_LENGTH = 12  # characters; sign-in is throttled per address, so length is what counts


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


def create_token(
    *,
    session: Session,
    name: str,
    scopes: str | Iterable[str],
    team: str | None = None,
    lifetime: timedelta = TOKEN_LIFETIME,
) -> tuple[str, ApiToken]:
    """A new token: its text (shown once, never stored) and its row (hash, prefix, scopes, expiry)."""
    if not timedelta(0) < lifetime <= MAX_TOKEN_LIFETIME:
        raise ValueError(f"a token lives from 1 to {MAX_TOKEN_LIFETIME.days} days")
    text = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    token = ApiToken(
        name=name,
        prefix=text[:PREFIX_LENGTH],
        secret_hash=_digest(text),
        scopes=_parse_scopes(scopes),
        team=team or None,
        expires_at=utcnow() + lifetime,
    )
    session.add(token)
    session.flush()
    return text, token


def verify_token(*, session: Session, token: str, note_use: bool = True) -> ApiToken | None:
    """The live token row matching `token`, or None (unknown, revoked or expired); notes when it was
    used (at most once per LAST_USED_RESOLUTION) unless note_use is False, when it only reads."""
    digest = _digest(token)
    candidates = session.scalars(select(ApiToken).where(ApiToken.prefix == token[:PREFIX_LENGTH]))
    match = next((c for c in candidates if hmac.compare_digest(c.secret_hash, digest)), None)
    if match is None or match.revoked_at is not None:
        return None
    if match.expires_at is not None and match.expires_at <= utcnow():
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


def granted_scopes(scopes: str) -> frozenset[str]:
    """Every scope a stored scope list grants (admin grants them all)."""
    granted = set(scopes.split(","))
    return frozenset(SCOPES) if "admin" in granted else frozenset(granted & set(SCOPES))


def token_has_scope(token: ApiToken, scope: str) -> bool:
    """Whether `token` grants `scope` (admin grants every scope)."""
    return scope in granted_scopes(token.scopes)


def check_password(password: str) -> None:
    """Refuse a password too short to resist guessing."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")


def create_user(
    *,
    session: Session,
    username: str,
    password: str,
    scopes: str | Iterable[str] = OPERATOR_SCOPES,
    team: str | None = None,
) -> User:
    """A new operator login; a taken username raises IntegrityError at flush."""
    if not username:
        raise ValueError("the username must not be empty")
    check_password(password)
    user = User(
        username=username,
        password_hash=generate_password_hash(password),
        scopes=_parse_scopes(scopes),
        team=team or None,
    )
    session.add(user)
    session.flush()
    return user


def _user(session: Session, username: str) -> User | None:
    return session.scalars(select(User).where(User.username == username)).first()


def set_password(*, session: Session, username: str, password: str) -> bool:
    """Replace a user's password and end their sessions; False when there is no such user."""
    check_password(password)
    user = _user(session, username)
    if user is None:
        return False
    user.password_hash = generate_password_hash(password)
    user.session_generation += 1
    session.flush()
    return True


def set_disabled(*, session: Session, username: str, disabled: bool) -> bool:
    """Disable (ending every session) or enable a login; False when there is no such user."""
    user = _user(session, username)
    if user is None:
        return False
    user.disabled = disabled
    user.session_generation += 1
    session.flush()
    return True


def delete_user(*, session: Session, username: str) -> bool:
    """Remove a login for good (its web sessions end with it); False when there is no such user.
    Its jobs, reviews and audit events keep the name they were recorded under."""
    deleted = session.execute(delete(User).where(User.username == username).returning(User.id)).first()
    return deleted is not None


def end_sessions(*, session: Session, user_id: int) -> None:
    """End every web session of the user (logout): cookies of an older generation stop working."""
    session.execute(
        update(User).where(User.id == user_id).values(session_generation=User.session_generation + 1)
    )


def verify_user(*, session: Session, username: str, password: str) -> User | None:
    """The enabled user with this username and password, or None."""
    user = _user(session, username)
    if user is None:
        check_password_hash(_dummy_password_hash(), password)
        return None
    if not check_password_hash(user.password_hash, password) or user.disabled:
        return None
    return user
