"""What a request works with: the app's settings, database sessions and the Celery app."""

from __future__ import annotations

from celery import Celery
from flask import current_app
from sqlalchemy.orm import Session, sessionmaker

from brainscan.settings import Settings
from db.engine import get_sessionmaker
from worker.celery_app import celery_for

EXTENSION = "brainscan.settings"


def settings() -> Settings:
    """The Settings the running app was created with."""
    found: Settings = current_app.extensions[EXTENSION]
    return found


def sessions(*, read_only: bool = False) -> sessionmaker[Session]:
    """Sessions on the app's database (read_only: SQLite transactions that never block writers)."""
    return get_sessionmaker(settings().resolved_database_url, read_only=read_only)


def celery() -> Celery:
    """The Celery app that sends work to the workers (enqueue only: no task code here)."""
    return celery_for(settings())
