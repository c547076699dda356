"""API tokens: DRF's token authentication with the token's user read from the cache.

Every request of a script or of the workspace's API calls starts by turning its token into a
user. The cache keeps, per token, the user's fields a request reads (``USER_FIELDS``), for
``TOKEN_CACHE_SECONDS``; the rest of the row (the password hash above all) stays in the
database and loads on first use, as a deferred field does.

An entry is dropped wherever what it answers may change: the token deleted (rotation, the
admin, the user deleted), the user saved (deactivation, role, password, any field), a worker
suspended from or readmitted to a project, a log-out. Dropping writes a tombstone that lives
as long as an entry would, now and again once the transaction commits: a request that read
the user before the change cannot put its stale copy back (``cache.add`` finds the
tombstone), so the next request after the commit reads the database. The time limit is the
backstop for a change no code path announced (a bulk ``UPDATE``) and for a drop that did not
reach Redis (the cache fails open, crowd/cache.py).

With a cache local to the process (the embedded default's), a drop reaches only the
process that made it; ``TOKEN_CACHE_SECONDS`` is 0 there unless set, since nothing tells
one process that another rotated a token.
"""

from __future__ import annotations

import hashlib
from typing import Any, cast

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils.translation import gettext_lazy as _
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed

from crowd.models import User
from crowd.prepared import Joined

# What a request reads of its user without another query.
USER_FIELDS = ("id", "username", "email", "role", "is_active", "is_staff", "is_superuser")
# The entry's values, in the order of the model's columns (as ``Model.from_db`` takes them);
# a change of either changes the key prefix, so entries of an old shape are never read.
_COLUMNS = [f.attname for f in User._meta.concrete_fields if f.attname in USER_FIELDS]
_PREFIX = "token-user:" + hashlib.sha256(",".join(_COLUMNS).encode()).hexdigest()[:8] + ":"
_GONE = "gone"


def _cache_key(key: str) -> str:
    # The token is a credential: the cache holds a digest of it, never the token itself.
    return _PREFIX + hashlib.sha256(key.encode()).hexdigest()


def _seconds() -> int:
    return int(getattr(settings, "TOKEN_CACHE_SECONDS", 0))


def _from_entry(key: str, values: tuple[Any, ...]) -> tuple[User, Token]:
    user = User.from_db(User.objects.db, _COLUMNS, list(values))
    token = Token.from_db(Token.objects.db, ["key", "user_id"], [key, user.pk])
    token.user = user
    return user, token


# The token and its user in one prepared read (no query compiled per request).
_TOKEN_WITH_USER = Joined(
    f"SELECT {{columns}} FROM {Token._meta.db_table} k "
    f"JOIN {User._meta.db_table} u ON u.id = k.user_id WHERE k.key = %s",
    (Token, "k"),
    (User, "u"),
)


class CachedTokenAuthentication(TokenAuthentication):
    """``Authorization: Token <key>``, with DRF's header parsing and error bodies; the
    token's user comes from the cache when it holds them."""

    def _read(self, key: str) -> tuple[User, Token]:
        """DRF's lookup, with its errors, as a prepared read."""
        found = _TOKEN_WITH_USER.first([key])
        if found is None:
            raise AuthenticationFailed(_("Invalid token."))
        token, user = cast(Token, found[0]), cast(User, found[1])
        if not user.is_active:
            raise AuthenticationFailed(_("User inactive or deleted."))
        token.user = user
        return user, token

    def authenticate_credentials(self, key: str) -> tuple[User, Token]:
        seconds = _seconds()
        if seconds <= 0:
            return self._read(key)
        cache_key = _cache_key(key)
        entry = cache.get(cache_key)
        if isinstance(entry, tuple):
            return _from_entry(key, entry)
        # Unknown and inactive users raise here, as without the cache; neither is cached.
        user, token = self._read(key)
        if entry is None:
            cache.add(cache_key, tuple(getattr(user, name) for name in _COLUMNS), seconds)
        return user, token


def token_forget(*, key: str) -> None:
    """Drop the cached user of this token, now and again when the current transaction
    commits (see the module's docstring)."""
    seconds = _seconds()
    if seconds <= 0:
        return
    cache_key = _cache_key(key)
    cache.set(cache_key, _GONE, seconds)
    transaction.on_commit(lambda: cache.set(cache_key, _GONE, seconds))


def tokens_forget_for_user(*, user_id: int) -> None:
    """Drop the cached user of each of this user's tokens."""
    if _seconds() <= 0:
        return
    for key in Token.objects.filter(user_id=user_id).values_list("key", flat=True):
        token_forget(key=key)


def _token_deleted(sender: type[Token], instance: Token, **kwargs: Any) -> None:
    token_forget(key=instance.key)


def _user_saved(
    sender: type[User],
    instance: User,
    created: bool,
    update_fields: frozenset[str] | None = None,
    **kwargs: Any,
) -> None:
    # A new user has no token yet; a log-in's last_login update changes nothing cached.
    if created or (update_fields is not None and update_fields <= {"last_login"}):
        return
    tokens_forget_for_user(user_id=instance.pk)


def connect_signals() -> None:
    """Drop entries on every write through the ORM: the admin, commands, cascades."""
    from django.db.models.signals import post_delete, post_save

    post_delete.connect(_token_deleted, sender=Token, dispatch_uid="crowd.tokens.deleted")
    post_save.connect(_user_saved, sender=User, dispatch_uid="crowd.tokens.user_saved")
