"""Calling a project's ML backend: a server that speaks the Label Studio ML backend protocol.

The server calls only backends whose ``host:port`` is in ``ML_BACKEND_HOSTS``: a URL is
checked when a project is saved (:func:`backend_url_check`) and again before every call, so
removing a host from the setting stops calls to it at once. Calls never follow redirects
(a redirect could lead anywhere), ignore proxy and ``.netrc`` settings of the environment,
time out, and read at most ``ML_BACKEND_MAX_RESPONSE_BYTES`` of an answer.

Images reach the backend as signed, short-lived URLs on ``PUBLIC_URL``
(:func:`image_signed_url`), which it fetches without credentials.
"""

from __future__ import annotations

import ipaddress
import json
import time
import unicodedata
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core import signing
from django.urls import reverse

SIGNING_SALT = "tasks.ml_backend.image"
MAX_URL_CHARS = 500


class BackendError(Exception):
    """A call to the backend failed; the message says how, for the manager to read."""

    def __init__(self, message: str, *, retry: bool = False) -> None:
        super().__init__(message)
        self.retry = retry


def _host_port(host: str, port: int) -> str:
    host = host.lower()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def allowed_hosts() -> set[str]:
    """``ML_BACKEND_HOSTS`` as normalised ``host:port`` pairs (IPv6 hosts in brackets)."""
    out: set[str] = set()
    for entry in settings.ML_BACKEND_HOSTS:
        entry = entry.strip()
        if not entry:
            continue
        parts = urlsplit(f"//{entry}")
        try:
            port = parts.port
        except ValueError:
            continue
        if parts.hostname and port:
            out.add(_host_port(parts.hostname, port))
    return out


def backend_url_problem(url: str) -> str | None:
    """Why ``url`` may not be a project's ML backend, or None when it may."""
    if len(url) > MAX_URL_CHARS:
        return f"At most {MAX_URL_CHARS} characters."
    if any(unicodedata.category(c)[0] in "CZ" for c in url) or "\\" in url:
        return "The URL contains spaces, control characters or backslashes."
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return "The URL starts with http:// or https://."
    if "@" in parts.netloc:
        return "The URL may not carry a user name or password."
    if parts.query or parts.fragment:
        return "The URL has no query or fragment: give the backend's base address."
    try:
        port = parts.port
    except ValueError:
        return "The URL's port is not a number from 1 to 65535."
    host = parts.hostname
    if not host:
        return "The URL names no host."
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not all(c.isascii() and (c.isalnum() or c in "-.") for c in host):
            return "The host name has characters a host name cannot have."
    pair = _host_port(host, port or (443 if parts.scheme == "https" else 80))
    allowed = allowed_hosts()
    if pair not in allowed:
        listed = ", ".join(sorted(allowed)) or "none"
        return (
            f"{pair} is not an allowed ML backend host (ML_BACKEND_HOSTS: {listed}); the "
            "server's operator adds hosts there."
        )
    return None


def image_signed_url(image_id: int) -> str:
    """An absolute URL of the image's file on ``PUBLIC_URL`` that anyone holding it may fetch
    for ``ML_IMAGE_URL_SECONDS``; bound to the image, useless for any other."""
    token = signing.TimestampSigner(salt=SIGNING_SALT).sign_object({"image": image_id})
    path = reverse("image-signed", kwargs={"image_id": image_id})
    return f"{settings.PUBLIC_URL}{path}?token={token}"


def image_signed_check(image_id: int, token: str) -> str | None:
    """None when ``token`` is a live signature of this image, else why not."""
    try:
        data = signing.TimestampSigner(salt=SIGNING_SALT).unsign_object(
            token, max_age=settings.ML_IMAGE_URL_SECONDS
        )
    except signing.SignatureExpired:
        return "The link has expired."
    except signing.BadSignature:
        return "The link's signature is not valid."
    if not isinstance(data, dict) or data.get("image") != image_id:
        return "The link is for another image."
    return None


class Client:
    """One backend, called by the job of a prediction run."""

    def __init__(self, url: str, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.trust_env = False  # no proxies or .netrc credentials from the environment
        self.sleep = sleep

    def close(self) -> None:
        self.session.close()

    def _call(self, method: str, path: str, body: Any = None, *, read: float) -> Any:
        problem = backend_url_problem(self.url)
        if problem:
            raise BackendError(f"The backend may no longer be called: {problem}")
        target = f"{self.url}{path}"
        try:
            response = self.session.request(
                method,
                target,
                json=body,
                timeout=(settings.ML_BACKEND_CONNECT_TIMEOUT_SECONDS, read),
                allow_redirects=False,
                stream=True,
            )
        except requests.Timeout:
            raise BackendError(f"{method} {path} timed out after {read:g} s.", retry=True) from None
        except requests.RequestException as exc:
            raise BackendError(f"{method} {path} failed: {_short(exc)}", retry=True) from None
        with response:
            limit = settings.ML_BACKEND_MAX_RESPONSE_BYTES
            try:
                raw = response.raw.read(limit + 1, decode_content=True)
            except Exception as exc:  # a connection cut mid-answer, a read timeout
                raise BackendError(
                    f"{method} {path}: the answer was cut off ({_short(exc)}).", retry=True
                ) from None
            if response.status_code >= 300:
                detail = raw[:300].decode("utf-8", "replace").strip()
                raise BackendError(
                    f"{method} {path} answered {response.status_code}"
                    + (f": {detail}" if detail else "."),
                    retry=response.status_code >= 500 or response.status_code == 429,
                )
            if len(raw) > limit:
                raise BackendError(f"{method} {path} answered more than {limit:,} bytes.")
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            raise BackendError(f"{method} {path} answered something that is not JSON.") from None

    def call(self, method: str, path: str, body: Any = None, *, read: float | None = None) -> Any:
        """The call, tried up to ``ML_BACKEND_TRIES`` times on timeouts, broken connections,
        5xx and 429, waiting ``ML_BACKEND_BACKOFF_SECONDS`` (doubling) between tries."""
        read = read or settings.ML_BACKEND_TIMEOUT_SECONDS
        tries = max(1, settings.ML_BACKEND_TRIES)
        wait = settings.ML_BACKEND_BACKOFF_SECONDS
        for attempt in range(1, tries + 1):
            try:
                return self._call(method, path, body, read=read)
            except BackendError as exc:
                if not exc.retry or attempt == tries:
                    if attempt > 1:
                        raise BackendError(f"{exc} (after {attempt} tries)") from None
                    raise
                self.sleep(wait)
                wait *= 2
        raise AssertionError("unreachable")

    def health(self) -> dict[str, Any]:
        body = self.call("GET", "/health", read=settings.ML_BACKEND_CONNECT_TIMEOUT_SECONDS * 2)
        if not isinstance(body, dict):
            raise BackendError("GET /health did not answer a JSON object.")
        if str(body.get("status", "UP")).upper() != "UP":
            raise BackendError(f"GET /health says the backend is {body.get('status')!r}, not UP.")
        return body

    def setup(self, *, project: int, label_config: str) -> dict[str, Any]:
        body = self.call(
            "POST",
            "/setup",
            {
                "project": str(project),
                "schema": label_config,
                "hostname": settings.PUBLIC_URL,
                "access_token": "",
                "extra_params": {},
            },
        )
        return body if isinstance(body, dict) else {}

    def predict(self, *, project: int, label_config: str, tasks: list[dict[str, Any]]) -> list[Any]:
        body = self.call(
            "POST",
            "/predict",
            {
                "tasks": tasks,
                "label_config": label_config,
                "project": str(project),
                "params": {"login": None, "password": None, "context": None},
            },
        )
        # {"results": [...]} (current backends) or a bare list (older ones).
        results = body.get("results") if isinstance(body, dict) else body
        if not isinstance(results, list):
            raise BackendError('POST /predict did not answer {"results": [...]}.')
        if len(results) != len(tasks):
            raise BackendError(
                f"POST /predict answered {len(results)} results for {len(tasks)} tasks."
            )
        return results


def _short(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."
