"""API tokens (hashed at rest, scoped, revocable) and operator logins (salted password hashes)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db.models import ApiToken, User
from db.tokens import (
    create_token,
    create_user,
    last_use_is_stale,
    list_tokens,
    revoke_token,
    set_password,
    token_has_scope,
    verify_token,
    verify_user,
)

Maker = sessionmaker[Session]


def test_a_token_is_shown_once_and_only_its_hash_is_stored(db_sessionmaker: Maker) -> None:
    with db_sessionmaker.begin() as session:
        text, token = create_token(session=session, name="ci", scopes=["read"])
    assert text.startswith("bs_") and len(text) >= 40 and token.prefix == text[:8]
    with db_sessionmaker() as session:
        stored = session.execute(select(ApiToken.__table__)).one()
        assert text not in [str(value) for value in stored]
        assert len(token.secret_hash) == 64


def test_verify_accepts_the_token_and_nothing_like_it(db_sessionmaker: Maker) -> None:
    with db_sessionmaker.begin() as session:
        text, token = create_token(session=session, name="ci", scopes="read,submit")
    with db_sessionmaker.begin() as session:
        found = verify_token(session=session, token=text)
        assert found is not None and found.id == token.id and found.last_used_at is not None
        assert verify_token(session=session, token=text[:-1] + ("A" if text[-1] != "A" else "B")) is None
        assert verify_token(session=session, token="") is None
        assert verify_token(session=session, token="bs_nonsense") is None


def test_last_used_is_written_at_most_once_a_minute(db_sessionmaker: Maker) -> None:
    with db_sessionmaker.begin() as session:
        text, _ = create_token(session=session, name="ci", scopes=["read"])
        first = verify_token(session=session, token=text)
        assert first is not None and first.last_used_at is not None
        stamp = first.last_used_at
        again = verify_token(session=session, token=text)
        assert again is not None and again.last_used_at == stamp
        session.execute(update(ApiToken).values(last_used_at=stamp - timedelta(minutes=2)))
        later = verify_token(session=session, token=text)
        assert later is not None and later.last_used_at is not None and later.last_used_at >= stamp


def test_a_revoked_token_is_refused(db_sessionmaker: Maker) -> None:
    with db_sessionmaker.begin() as session:
        text, token = create_token(session=session, name="old", scopes=["admin"])
        _, kept = create_token(session=session, name="new", scopes=["read"])
    with db_sessionmaker.begin() as session:
        assert revoke_token(session=session, token_id=token.id)
        assert not revoke_token(session=session, token_id=token.id)
        assert not revoke_token(session=session, token_id=9999)
    with db_sessionmaker() as session:
        assert verify_token(session=session, token=text) is None
        assert [t.name for t in list_tokens(session=session)] == ["new", "old"]
        assert [t.id for t in list_tokens(session=session, include_revoked=False)] == [kept.id]


def test_scopes_are_checked_and_admin_implies_every_scope(db_sessionmaker: Maker) -> None:
    with db_sessionmaker.begin() as session:
        _, reader = create_token(session=session, name="r", scopes=["read"])
        _, admin = create_token(session=session, name="a", scopes=" admin ")
        with pytest.raises(ValueError, match="scopes"):
            create_token(session=session, name="bad", scopes=["read", "delete-everything"])
        with pytest.raises(ValueError, match="scopes"):
            create_token(session=session, name="none", scopes=[])
    assert token_has_scope(reader, "read") and not token_has_scope(reader, "submit")
    assert all(token_has_scope(admin, scope) for scope in ("read", "submit", "admin"))


def test_an_operator_logs_in_with_the_right_password_only(db_sessionmaker: Maker) -> None:
    with db_sessionmaker.begin() as session:
        user = create_user(session=session, username="radiology", password="correct horse")
        assert "correct horse" not in user.password_hash
    with db_sessionmaker.begin() as session:
        found = verify_user(session=session, username="radiology", password="correct horse")
        assert found is not None and found.id == user.id
        assert verify_user(session=session, username="radiology", password="wrong") is None
        assert verify_user(session=session, username="nobody", password="correct horse") is None
        assert set_password(session=session, username="radiology", password="battery staple")
        assert verify_user(session=session, username="radiology", password="correct horse") is None
        assert verify_user(session=session, username="radiology", password="battery staple") is not None
        session.execute(update(User).values(disabled=True))
        assert verify_user(session=session, username="radiology", password="battery staple") is None


def test_a_username_is_taken_once(db_sessionmaker: Maker) -> None:
    with db_sessionmaker.begin() as session:
        create_user(session=session, username="radiology", password="a" * 12)
    with pytest.raises(IntegrityError), db_sessionmaker.begin() as session:
        create_user(session=session, username="radiology", password="b" * 12)


def test_a_read_only_check_writes_nothing(db_sessionmaker: Maker) -> None:
    with db_sessionmaker.begin() as session:
        text, _ = create_token(session=session, name="poller", scopes=["read"])
    with db_sessionmaker() as session:
        found = verify_token(session=session, token=text, note_use=False)
        assert found is not None and found.last_used_at is None and last_use_is_stale(found)
        assert not session.dirty and not session.new
