"""A database of its own for each test that runs the app in server processes."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest


@pytest.fixture
def database_url() -> Iterator[str]:
    """A database of its own on the PostgreSQL pass's server, dropped afterwards."""
    admin_url = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
    name = f"crowd_live_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
