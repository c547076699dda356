"""Settings that must agree across machines are refused when missing, with a message a person
can act on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def settings_load(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SECRET_KEY")}
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "crowd.settings", "VAR_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_database_url_without_a_secret_key_refuses_to_start(tmp_path: Path) -> None:
    done = settings_load(tmp_path, DATABASE_URL="postgres://crowd@127.0.0.1:1/crowd")
    assert done.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY is not set" in done.stderr
    assert "token_urlsafe" in done.stderr  # how to make one
    assert not (tmp_path / "secret_key").exists()  # no key generated for this machine alone


def test_the_embedded_default_generates_its_key_once(tmp_path: Path) -> None:
    assert settings_load(tmp_path).returncode == 0
    key = (tmp_path / "secret_key").read_text()
    assert settings_load(tmp_path).returncode == 0
    assert (tmp_path / "secret_key").read_text() == key
    configured = settings_load(
        tmp_path, DATABASE_URL="postgres://crowd@127.0.0.1:1/crowd", SECRET_KEY="x" * 50
    )
    assert configured.returncode == 0, configured.stderr
