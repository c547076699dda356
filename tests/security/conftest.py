from __future__ import annotations

from pathlib import Path

import pytest

from tests.security.world import World, build_world


@pytest.fixture(autouse=True)
def _media(settings, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    # The world makes a dozen users; the default hasher's deliberate slowness would dominate.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def world(db: None, _media: None) -> World:
    return build_world()
