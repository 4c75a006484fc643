"""Alembic migrations for the brainscan schema (run them with `brainscan db upgrade`)."""
