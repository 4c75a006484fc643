"""Web commands: `api` (gunicorn serving the app factory), `token` (API tokens), `user` (operator logins)."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import click
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from brainscan.cli.context import cli_settings, private_files
from brainscan.settings import Settings

API_THREADS = 8  # per process, running views; clients still sending headers wait in the event loop
GUNICORN_TIMEOUT_S = 120  # a worker silent this long is restarted; also the longest wait for a body chunk
KEEPALIVE_S = 5  # an idle kept-alive connection is closed after this
SCOPE_CHOICES = ("read", "submit", "review", "all-jobs", "admin")
SCOPE_HELP = (
    "read (GET), submit (POST jobs, cancel, re-run), review (record radiologists' verdicts), "
    "all-jobs (other owners' jobs too, not only its own and its team's) or admin (all of them); "
    "repeat for several."
)
TEAM_OPTION = click.option("--team", help="Team whose members share their jobs (e.g. neuroradiology).")
TIMES = ("created", "expires", "last used", "revoked")


@contextmanager
def _transaction() -> Iterator[Session]:
    """A write transaction on the configured database, with a plain message when it is not set up."""
    from db.engine import get_sessionmaker

    try:
        with get_sessionmaker(cli_settings().resolved_database_url).begin() as session:
            yield session
    except (OperationalError, ProgrammingError) as exc:
        problem = "the database is not reachable or not migrated (run `brainscan db upgrade`)"
        raise click.ClickException(f"{problem}: {exc.orig}") from exc


def _cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _gunicorn(settings: Settings, options: dict[str, Any]) -> Any:
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):  # type: ignore[misc]
        """Gunicorn running `create_app(settings)` in each worker process (engines made after fork).

        Gunicorn's asyncio (asgi) worker reads every request's headers in its event loop, so slow
        or stalled clients (slowloris) cost a socket, not one of the threads that run views;
        api.asgi reads small bodies in that loop too and streams submissions to the Flask app
        (a2wsgi, API_THREADS threads), which refuses an unauthenticated or oversized one unread.
        """

        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Callable[..., Any]:
            from api import create_app
            from api.asgi import asgi_app

            return asgi_app(create_app(settings), threads=API_THREADS)

    return Server()


@click.command()
@click.option("--host", help="Address to listen on (default: BRAINSCAN_API_HOST, else 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: BRAINSCAN_API_PORT, else 8000).")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    help="Gunicorn processes (default: BRAINSCAN_API_WORKERS, else 2).",
)
def api(host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the REST API and the web view with gunicorn (production)."""
    private_files()
    settings = cli_settings().with_overrides(api_host=host, api_port=port, api_workers=workers)
    click.echo(
        f"brainscan api: http://{settings.api_host}:{settings.api_port}/ "
        f"({settings.api_workers} processes x {API_THREADS} threads), "
        f"archive root {settings.resolved_archive_root}",
        err=True,
    )
    serve_api(settings)


def serve_api(settings: Settings) -> None:
    """Run gunicorn with the app factory on settings.api_host:api_port until stopped (also for `up`)."""
    _gunicorn(
        settings,
        {
            "bind": f"{settings.api_host}:{settings.api_port}",
            "workers": settings.api_workers,
            "worker_class": "asgi",
            "timeout": GUNICORN_TIMEOUT_S,
            "keepalive": KEEPALIVE_S,
            "asgi_lifespan": "off",
            "control_socket_disable": True,
            "accesslog": "-",
            "errorlog": "-",
            "loglevel": settings.log_level.lower(),
            "forwarded_allow_ips": "127.0.0.1",
        },
    ).run()


@click.group()
def token() -> None:
    """Create, list and revoke API tokens (stored hashed: a token is shown once, at creation)."""


@token.command("create")
@click.option(
    "--scope", "scopes", multiple=True, required=True, type=click.Choice(SCOPE_CHOICES), help=SCOPE_HELP
)
@click.option("--name", default="", help="Who or what uses it (shown in listings and the audit log).")
@TEAM_OPTION
@click.option(
    "--expires-in-days",
    type=click.IntRange(1, 730),
    default=365,
    show_default=True,
    help="Days until the token stops working.",
)
def token_create(scopes: tuple[str, ...], name: str, team: str | None, expires_in_days: int) -> None:
    """Create a token; the token alone is printed on the last line."""
    from datetime import timedelta

    from db.audit import record_event
    from db.tokens import create_token

    label = name or f"{'+'.join(scopes)} token"
    with _transaction() as session:
        text, row = create_token(
            session=session, name=label, scopes=scopes, team=team, lifetime=timedelta(days=expires_in_days)
        )
        record_event(
            session=session,
            actor=_cli_actor(),
            action="token.create",
            detail={"token_id": row.id, "name": label, "scopes": row.scopes, "team": row.team},
        )
        token_id, granted, expires = row.id, row.scopes, row.expires_at
    click.echo(
        f"token {token_id} ({label}), scopes {granted}, expires {expires:%Y-%m-%d}; it is shown only now:",
        err=True,
    )
    click.echo(text)


@token.command("list")
def token_list() -> None:
    """List tokens: id, prefix, scopes, created, expires, last used, revoked, name."""
    from db.tokens import list_tokens

    with _transaction() as session:
        rows = [
            (t.id, t.prefix, t.scopes, t.name, t.created_at, t.expires_at, t.last_used_at, t.revoked_at)
            for t in list_tokens(session=session)
        ]
    if not rows:
        click.echo("no tokens yet: brainscan token create --scope read")
        return
    click.echo(f"{'id':>4}  {'prefix':8}  {'scopes':18}  " + "  ".join(f"{h:16}" for h in TIMES) + "  name")
    for token_id, prefix, scopes, name, *moments in rows:
        times = "  ".join(f"{f'{m:%Y-%m-%d %H:%M}' if m else '-':16}" for m in moments)
        click.echo(f"{token_id:>4}  {prefix:8}  {scopes:18}  {times}  {name}")


@token.command("revoke")
@click.argument("token_id", type=int)
def token_revoke(token_id: int) -> None:
    """Revoke token TOKEN_ID: requests with it are refused from now on."""
    from db.audit import record_event
    from db.tokens import revoke_token

    with _transaction() as session:
        if not revoke_token(session=session, token_id=token_id):
            raise click.ClickException(f"there is no live token {token_id} (unknown or already revoked)")
        record_event(
            session=session, actor=_cli_actor(), action="token.revoke", detail={"token_id": token_id}
        )
    click.echo(f"token {token_id} revoked")


def _password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    from db.tokens import check_password

    try:
        check_password(password)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    return password


PASSWORD_STDIN = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input (scripts).",
)


@click.group()
def user() -> None:
    """Operator logins for the web view."""


@user.command("create")
@click.argument("username")
@PASSWORD_STDIN
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(SCOPE_CHOICES),
    help="What the login may do (default: read and submit, its own and its team's jobs). " + SCOPE_HELP,
)
@TEAM_OPTION
def user_create(username: str, password_stdin: bool, scopes: tuple[str, ...], team: str | None) -> None:
    """Create operator USERNAME (asks for the password unless --password-stdin)."""
    from db.audit import record_event
    from db.tokens import OPERATOR_SCOPES, create_user

    password = _password(password_stdin)
    try:
        with _transaction() as session:
            row = create_user(
                session=session,
                username=username,
                password=password,
                scopes=scopes or OPERATOR_SCOPES,
                team=team,
            )
            record_event(
                session=session,
                actor=_cli_actor(),
                action="user.create",
                detail={"username": username, "scopes": row.scopes, "team": row.team},
            )
    except IntegrityError as exc:
        hint = "use `brainscan user set-password` to change its password"
        raise click.ClickException(f"user {username} already exists ({hint})") from exc
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"user {username} created")


@user.command("set-password")
@click.argument("username")
@PASSWORD_STDIN
def user_set_password(username: str, password_stdin: bool) -> None:
    """Set a new password for operator USERNAME (their web sessions end)."""
    from db.audit import record_event
    from db.tokens import set_password

    password = _password(password_stdin)
    with _transaction() as session:
        if not set_password(session=session, username=username, password=password):
            raise click.ClickException(f"there is no user {username}")
        record_event(
            session=session, actor=_cli_actor(), action="user.password", detail={"username": username}
        )
    click.echo(f"password of {username} changed; their web sessions have ended")
    _strike_first_password(username)


def _strike_first_password(username: str) -> None:
    """`brainscan up` wrote the first admin password to a file: once it no longer works, say so
    there instead of leaving a wrong password on disk."""
    from brainscan.embedded import CREDENTIALS

    credentials = cli_settings().data_dir / CREDENTIALS
    if not credentials.is_file():
        return
    lines = credentials.read_text().splitlines()
    first = f"web login: {username} / "
    if not any(line.startswith(first) for line in lines):
        return
    changed = (
        f"web login: {username} (password changed {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; ask its holder)"
    )
    credentials.write_text("\n".join(changed if line.startswith(first) else line for line in lines) + "\n")


def _set_disabled(username: str, disabled: bool) -> None:
    from db.audit import record_event
    from db.tokens import set_disabled

    with _transaction() as session:
        if not set_disabled(session=session, username=username, disabled=disabled):
            raise click.ClickException(f"there is no user {username}")
        action = "user.disable" if disabled else "user.enable"
        record_event(session=session, actor=_cli_actor(), action=action, detail={"username": username})


@user.command("disable")
@click.argument("username")
def user_disable(username: str) -> None:
    """Stop USERNAME from signing in; their web sessions end at once."""
    _set_disabled(username, True)
    click.echo(f"user {username} disabled; their web sessions have ended")


@user.command("enable")
@click.argument("username")
def user_enable(username: str) -> None:
    """Let a disabled USERNAME sign in again."""
    _set_disabled(username, False)
    click.echo(f"user {username} enabled")


@user.command("delete")
@click.argument("username")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (scripts).")
def user_delete(username: str, yes: bool) -> None:
    """Remove USERNAME for good. Its jobs, reviews and audit events keep the name; to keep the
    login but stop it signing in, use `brainscan user disable`."""
    from db.audit import record_event
    from db.tokens import delete_user

    if not yes:
        click.confirm(f"Delete user {username} for good?", abort=True)
    with _transaction() as session:
        if not delete_user(session=session, username=username):
            raise click.ClickException(f"there is no user {username}")
        record_event(session=session, actor=_cli_actor(), action="user.delete", detail={"username": username})
    click.echo(f"user {username} deleted; their web sessions have ended")


@user.command("unblock")
@click.argument("address")
def user_unblock(address: str) -> None:
    """Let ADDRESS try to sign in again at once, after too many failed sign-ins from it."""
    from db.audit import record_event

    with _transaction() as session:
        record_event(session=session, actor=_cli_actor(), action="login.unblock", client=address[:64])
    click.echo(f"sign-ins from {address} are no longer held back")


@user.command("list")
def user_list() -> None:
    """List web logins: name, scopes, team, created, and whether they are disabled."""
    from sqlalchemy import select

    from db.models import User

    with _transaction() as session:
        rows = [
            (u.username, u.scopes, u.team or "-", u.created_at, "disabled" if u.disabled else "active")
            for u in session.scalars(select(User).order_by(User.username))
        ]
    if not rows:
        click.echo("no users yet: brainscan user create NAME --scope read --scope submit")
        return
    table = [("username", "scopes", "team", "created", "state")]
    table += [
        (name, scopes, team, f"{created:%Y-%m-%d %H:%M}", state)
        for name, scopes, team, created, state in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:  # columns as wide as their longest cell: a long team name does not shift the rest
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[4]
        )


@click.command()
@click.option("--job", "job_id", type=int, help="Only this job's events.")
@click.option("--actor", help="Only this user's or token's events (as shown in the actor column).")
@click.option("--action", help="Only this action, e.g. login.failed; job. for every job event.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of a table.")
def audit(job_id: int | None, actor: str | None, action: str | None, limit: int, as_json: bool) -> None:
    """Read the audit log, newest first: who submitted, cancelled, reviewed, signed in, changed a
    login or a token, and when. Actions: see db/audit.py ACTIONS."""
    import json

    from db.audit import list_events

    with _transaction() as session:
        events: list[dict[str, Any]] = [
            {
                "id": e.id,
                "at": e.at.isoformat(),
                "actor": e.actor,
                "action": e.action,
                "job_id": e.job_id,
                "client": e.client,
                "detail": e.detail,
            }
            for e in list_events(session=session, job_id=job_id, actor=actor, action=action, limit=limit)
        ]
    if as_json:
        for event in events:
            click.echo(json.dumps(event))
        return
    if not events:
        click.echo("no events match")
        return
    click.echo(f"{'id':>6}  {'at (UTC)':19}  {'actor':20}  {'action':15}  {'job':>5}  detail")
    for e in events:
        detail = json.dumps(e["detail"]) if e["detail"] else ""
        when = str(e["at"])[:19].replace("T", " ")
        job = e["job_id"] if e["job_id"] is not None else "-"
        click.echo(f"{e['id']:>6}  {when:19}  {e['actor']:20}  {e['action']:15}  {job:>5}  {detail}")


COMMANDS: list[click.Command] = [api, token, user, audit]
