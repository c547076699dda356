"""Set up Django for an in-process benchmark on a fresh embedded-default database."""

from __future__ import annotations

import os
import secrets
import tempfile


def setup(**env: str) -> str:
    """Point the settings at a new VAR_DIR (SQLite, media), set ``env``, migrate; return it."""
    var_dir = tempfile.mkdtemp(prefix="crowd-bench-")
    for name in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(name, None)
    os.environ["VAR_DIR"] = var_dir
    # One key for this benchmark and the servers it starts, as a PostgreSQL set-up requires.
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crowd.settings")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    return var_dir
