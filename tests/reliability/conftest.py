"""Databases and environments for the reliability tests' server processes.

The tests run real processes (uvicorn, Dramatiq workers, ``manage.py``) on the PostgreSQL
pass's server and the session's Redis. Each test gets a database of its own, copied from one
migrated once per session (``CREATE DATABASE ... TEMPLATE``), and a Redis key prefix of its
own.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.e2e.server import manage, server_env
from tests.plugins.services import Server


def _admin_url() -> str:
    return os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"


def _url(name: str) -> str:
    return _admin_url().rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    name = f"crowd_reliability_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_admin_url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        env = server_env(
            DATABASE_URL=_url(name), VAR_DIR=str(tmp_path_factory.mktemp("template-var"))
        )
        manage(env, "migrate", "--noinput")
        yield name
    finally:
        with psycopg.connect(_admin_url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(migrated_template: str) -> Iterator[str]:
    """A migrated database of this test's own, dropped afterwards."""
    name = f"crowd_rel_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_admin_url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{migrated_template}"')
    try:
        yield _url(name)
    finally:
        with psycopg.connect(_admin_url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def services_env(database_url: str, redis_server: Server, tmp_path: Path) -> dict[str, str]:
    """The environment of a production deployment on this test's database and Redis prefix."""
    return server_env(
        DATABASE_URL=database_url,
        REDIS_URL=redis_server.url,
        REDIS_PREFIX=f"crowd-rel-{uuid.uuid4().hex[:8]}",
        VAR_DIR=str(tmp_path / "var"),
    )


@pytest.fixture
def db_conn(database_url: str) -> Iterator[psycopg.Connection]:
    """A connection of the test's own to the servers' database, for looking at the rows."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn
