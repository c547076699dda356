"""A small, stateful, in-memory fake of the part of the Stripe API that payouts use.

Payouts pay workers through Stripe Connect Express: the platform creates an Express account
per worker, sends the worker through onboarding with an account link, then moves money with
transfers (and takes it back with transfer reversals). The tests drive the real ``stripe``
SDK against this server because CI has no network. It speaks what the SDK speaks:
form-encoded request bodies with nested keys (``metadata[payout]=7``), ``Authorization:
Bearer sk_test_...``, ``Idempotency-Key`` and ``Stripe-Version`` headers, and Stripe-shaped
JSON objects and errors (so the SDK raises ``stripe.InvalidRequestError``,
``stripe.IdempotencyError``, ``stripe.APIError``, ``stripe.AuthenticationError``...).

Resources: ``POST/GET /v1/accounts``, ``GET /v1/accounts/{id}``, ``POST /v1/account_links``,
``POST/GET /v1/transfers``, ``GET /v1/transfers/{id}``, ``POST/GET
/v1/transfers/{id}/reversals``, ``GET /v1/balance``, ``GET /v1/events`` and ``GET
/v1/events/{id}``. ``GET /onboarding/{account}`` (the account link's ``url``) completes the
account's onboarding and redirects to the link's ``return_url``, as a worker's browser would.

Pointing the SDK (stripe 16) at the fake::

    with FakeStripe() as fake:
        client = stripe.StripeClient(
            "sk_test_fake",
            base_addresses={"api": fake.url},
            max_network_retries=0,  # None (the default) also means no retries here
            http_client=stripe.RequestsClient(timeout=5),
        )
        client.v1.transfers.create(params={...}, options={"idempotency_key": "payout-7"})

or, for code that uses the module-level API (``stripe.Transfer.create(...)``), set
``stripe.api_base = fake.url`` and ``stripe.api_key = "sk_test_..."`` (with pytest's
``monkeypatch.setattr`` so they are restored); ``stripe.max_network_retries`` (default 2)
and ``stripe.default_http_client`` apply there. Short client timeouts need
``stripe.RequestsClient(timeout=...)``: the stdlib ``UrllibClient`` takes no timeout and
``stripe.HTTPXClient`` needs ``httpx``, which is not installed. ``stripe.enable_telemetry =
False`` keeps the SDK from writing ``~/.config/stripe/telemetry_id``.

Idempotency works as Stripe documents it: every POST carries an ``Idempotency-Key`` (the SDK
generates one when the caller gives none and reuses it for its own retries). A key seen before,
for the same API key, replays the first answer (same status and body, plus the header
``Idempotent-Replayed: true``) without doing anything again; reusing it with other parameters
or on another endpoint answers 400 ``idempotency_error``; reusing it while the first request
is still running answers 409. Answers to requests whose parameters fail validation are not
saved (Stripe saves nothing when the endpoint never started); answers from the endpoint's own
checks (``balance_insufficient``, a destination that cannot receive transfers) are saved.

Faults for retry tests: :meth:`FakeStripe.fail_next` answers the next matching request(s)
with an ``api_error`` (with ``after_effect=True``, only after the operation has been done and
its answer saved under the key: the provider failed after the transfer was created), and
:meth:`FakeStripe.delay_next` makes them slow so a client with a short timeout gives up.

Webhooks: operations queue events (``transfer.created``, ``transfer.reversed``, and
``account.updated`` from :meth:`FakeStripe.complete_onboarding`). A test takes them with
:meth:`FakeStripe.take_events` and delivers them when, how often and in what order it likes,
signing the body from :meth:`FakeStripe.event_payload` with :meth:`FakeStripe.sign`.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import re
import secrets
import string
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, NamedTuple, Self, cast
from urllib.parse import parse_qsl, urlsplit

JSON = dict[str, Any]

DEFAULT_BALANCES: Mapping[str, int] = {"usd": 10_000_000, "eur": 10_000_000}
# Used for events when no request told the fake which API version the client speaks.
DEFAULT_API_VERSION = "2026-10-28.endive"
ACCOUNT_LINK_TTL = 300

_API_KEY = re.compile(r"^(?:sk|rk)_test_[A-Za-z0-9_]+$")
_NESTED_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_ID_ALPHABET = string.ascii_letters + string.digits
_CURRENCY = re.compile(r"^[a-z]{3}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_EURO_COUNTRIES = frozenset(
    {"AT", "BE", "CY", "DE", "EE", "ES", "FI", "FR", "GR", "HR"}
    | {"IE", "IT", "LT", "LU", "LV", "MT", "NL", "PT", "SI", "SK"}
)
_COUNTRY_CURRENCY = {"US": "usd", "GB": "gbp", "CA": "cad", "AU": "aud", "CH": "chf"}
_NOT_ONBOARDED_DUE = ["external_account", "tos_acceptance.date", "tos_acceptance.ip"]


class RecordedRequest(NamedTuple):
    """One request as the fake received it (params are the decoded form or query)."""

    method: str
    path: str
    params: JSON
    idempotency_key: str | None


class StripeFault(Exception):
    """A Stripe-shaped error answer: ``{"error": {"type", "message", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        saved: bool = True,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        # Whether an idempotent request's key remembers this answer (see the module docstring).
        self.saved = saved

    def body(self) -> JSON:
        error: JSON = {"type": self.type, "message": self.message}
        if self.param is not None:
            error["param"] = self.param
        if self.code is not None:
            error["code"] = self.code
        return {"error": error}


def _invalid(message: str, *, param: str | None = None, code: str | None = None) -> StripeFault:
    """A parameter-validation error: 400, never saved under an idempotency key."""
    return StripeFault(400, message, param=param, code=code, saved=False)


@dataclass
class _Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def _json_response(status: int, obj: JSON, headers: Mapping[str, str] | None = None) -> _Response:
    body = json.dumps(obj, indent=2, sort_keys=False).encode()
    return _Response(status, body, {"Content-Type": "application/json", **(headers or {})})


@dataclass
class _Saved:
    method: str
    path: str
    params_fingerprint: str
    response: _Response


@dataclass
class _Fault:
    kind: Literal["fail", "delay"]
    remaining: int
    after_effect: bool
    path_prefix: str
    method: str | None
    status: int = 500
    seconds: float = 0.0
    should_retry: bool | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method.upper() == method) and path.startswith(
            self.path_prefix
        )


@dataclass
class _Context:
    request_id: str
    idempotency_key: str | None
    api_version: str


Route = Callable[[_Context, JSON, str], tuple[int, JSON]]


def _new_id(prefix: str, length: int = 24) -> str:
    return prefix + "_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def _fingerprint(params: JSON) -> str:
    return json.dumps(params, sort_keys=True)


def parse_form(encoded: str) -> JSON:
    """Decode Stripe's form encoding: ``a[b][c]=1`` nests, ``a[0]=x&a[1]=y`` is a list."""
    result: JSON = {}
    for raw_key, value in parse_qsl(encoded, keep_blank_values=True):
        match = _NESTED_KEY.match(raw_key)
        if match is None:
            raise _invalid(f"Invalid parameter name: {raw_key}", code="parameter_unknown")
        parts = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        node = result
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise _invalid(f"Invalid parameter: {raw_key}", param=parts[0])
            node = child
        last = parts[-1]
        if last == "":  # key[]=x appends
            last = str(len(node))
        node[last] = value
    return _lists_from_indexes(result)


def _lists_from_indexes(node: Any, name: str = "") -> Any:
    if not isinstance(node, dict):
        return node
    converted = {key: _lists_from_indexes(value, key) for key, value in node.items()}
    if name != "metadata" and converted and all(key.isdigit() for key in converted):
        return [converted[key] for key in sorted(converted, key=int)]
    return converted


def _check_known(params: JSON, allowed: set[str]) -> None:
    for name in params:
        if name not in allowed:
            raise _invalid(
                f"Received unknown parameter: {name}", param=name, code="parameter_unknown"
            )


def _string(params: JSON, name: str, *, required: bool = False) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise _invalid(f"Missing required param: {name}.", param=name, code="parameter_missing")
        return None
    if not isinstance(value, str):
        raise _invalid(f"Invalid string: {name}", param=name, code="parameter_invalid_string")
    return value


def _positive_int(params: JSON, name: str, *, required: bool = False) -> int | None:
    raw = _string(params, name, required=required)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise _invalid(
            f"Invalid integer: {raw}", param=name, code="parameter_invalid_integer"
        ) from None
    if value < 1:
        raise _invalid("Invalid positive integer", param=name, code="parameter_invalid_integer")
    return value


def _metadata(params: JSON) -> dict[str, str]:
    raw = params.get("metadata")
    if raw is None or raw == "":
        return {}
    if not isinstance(raw, dict):
        raise _invalid("Invalid hash", param="metadata", code="parameter_invalid_object")
    metadata: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(value, str):
            raise _invalid("Invalid string", param=f"metadata[{key}]")
        if len(key) > 40 or len(value) > 500:
            raise _invalid(
                "Metadata keys can be at most 40 characters and values 500 characters.",
                param=f"metadata[{key}]",
            )
        if value != "":  # an empty value means "unset"
            metadata[key] = value
    if len(metadata) > 50:
        raise _invalid("Metadata can have at most 50 keys.", param="metadata")
    return metadata


def _currency(params: JSON) -> str:
    currency = cast(str, _string(params, "currency", required=True)).lower()
    if not _CURRENCY.match(currency):
        raise _invalid(
            f"Invalid currency: {currency}.", param="currency", code="parameter_invalid_string"
        )
    return currency


def _url(params: JSON, name: str) -> str:
    value = cast(str, _string(params, name, required=True))
    if not value.startswith(("http://", "https://")):
        raise _invalid("Not a valid URL", param=name, code="url_invalid")
    return value


def _created_filter(params: JSON) -> Callable[[int], bool]:
    raw = params.get("created")
    if raw is None:
        return lambda _created: True
    if isinstance(raw, str):
        try:
            exact = int(raw)
        except ValueError:
            raise _invalid("Invalid integer", param="created") from None
        return lambda created: created == exact
    if not isinstance(raw, dict):
        raise _invalid("Invalid hash", param="created")
    bounds: dict[str, int] = {}
    for op, value in raw.items():
        if op not in {"gt", "gte", "lt", "lte"}:
            raise _invalid(f"Received unknown parameter: created[{op}]", param=f"created[{op}]")
        try:
            bounds[op] = int(value)
        except (TypeError, ValueError):
            raise _invalid("Invalid integer", param=f"created[{op}]") from None

    def accept(created: int) -> bool:
        return (
            ("gt" not in bounds or created > bounds["gt"])
            and ("gte" not in bounds or created >= bounds["gte"])
            and ("lt" not in bounds or created < bounds["lt"])
            and ("lte" not in bounds or created <= bounds["lte"])
        )

    return accept


def _page(items: list[JSON], params: JSON, url: str) -> JSON:
    """One page of ``items`` (newest first) with Stripe's cursor rules and ``has_more``."""
    limit_raw = _string(params, "limit")
    limit = 10
    if limit_raw is not None:
        try:
            limit = int(limit_raw)
        except ValueError:
            raise _invalid(
                f"Invalid integer: {limit_raw}", param="limit", code="parameter_invalid_integer"
            ) from None
        if not 1 <= limit <= 100:
            raise _invalid(
                "This value must be greater than or equal to 1 and less than or equal to 100.",
                param="limit",
                code="parameter_invalid_integer",
            )
    starting_after = _string(params, "starting_after")
    ending_before = _string(params, "ending_before")
    if starting_after and ending_before:
        raise _invalid(
            "You may only specify one of these parameters: ending_before, starting_after."
        )
    ids = [item["id"] for item in items]

    def position(cursor: str, param: str) -> int:
        try:
            return ids.index(cursor)
        except ValueError:
            raise StripeFault(
                400,
                f"No such object: '{cursor}'",
                param=param,
                code="resource_missing",
                saved=False,
            ) from None

    if starting_after is not None:
        start = position(starting_after, "starting_after") + 1
        window = items[start : start + limit]
        has_more = start + limit < len(items)
    elif ending_before is not None:
        end = position(ending_before, "ending_before")
        start = max(0, end - limit)
        window = items[start:end]
        has_more = start > 0
    else:
        window = items[:limit]
        has_more = len(items) > limit
    return {"object": "list", "url": url, "has_more": has_more, "data": window}


class FakeStripe:
    """The fake Stripe server: start it, point the SDK at :attr:`url`, inspect its state.

    ``balances`` is the platform's starting available balance per currency (default
    10_000_000 minor units of "usd" and of "eur"); ``api_version`` is what events report as
    their ``api_version`` (default: the ``Stripe-Version`` of the request behind the event).
    All state lives behind one lock, so tests may drive it from many threads at once.
    """

    def __init__(
        self,
        *,
        balances: Mapping[str, int] | None = None,
        api_version: str | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._api_version = api_version
        self._last_api_version: str | None = None
        self._balances: dict[str, int] = dict(DEFAULT_BALANCES if balances is None else balances)
        self._accounts: dict[str, JSON] = {}
        self._account_links: dict[str, JSON] = {}  # latest link per account
        self._transfers: dict[str, JSON] = {}
        self._events: dict[str, JSON] = {}
        self._pending: list[str] = []
        self._requests: list[RecordedRequest] = []
        self._saved: dict[tuple[str, str], _Saved] = {}
        self._in_flight: set[tuple[str, str]] = set()
        self._faults: list[_Fault] = []
        self._routes: list[tuple[str, re.Pattern[str], Route, bool]] = [
            # (method, path, handler, changes state)
            ("POST", re.compile(r"^/v1/accounts$"), self._create_account, True),
            ("GET", re.compile(r"^/v1/accounts$"), self._list_accounts, False),
            ("GET", re.compile(r"^/v1/accounts/([^/]+)$"), self._retrieve_account, False),
            ("POST", re.compile(r"^/v1/account_links$"), self._create_account_link, True),
            ("POST", re.compile(r"^/v1/transfers$"), self._create_transfer, True),
            ("GET", re.compile(r"^/v1/transfers$"), self._list_transfers, False),
            ("GET", re.compile(r"^/v1/transfers/([^/]+)$"), self._retrieve_transfer, False),
            (
                "POST",
                re.compile(r"^/v1/transfers/([^/]+)/reversals$"),
                self._create_reversal,
                True,
            ),
            (
                "GET",
                re.compile(r"^/v1/transfers/([^/]+)/reversals$"),
                self._list_reversals,
                False,
            ),
            ("GET", re.compile(r"^/v1/balance$"), self._retrieve_balance, False),
            ("GET", re.compile(r"^/v1/events$"), self._list_events, False),
            ("GET", re.compile(r"^/v1/events/([^/]+)$"), self._retrieve_event, False),
        ]

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("FakeStripe is already running")
        self._stopping.clear()
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-stripe",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()  # wakes handlers sleeping in delay_next
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the SDK's API base."""
        if self._server is None:
            raise RuntimeError("FakeStripe is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # --- state for assertions ----------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, oldest first, including refused and faulted ones."""
        with self._lock:
            return list(self._requests)

    @property
    def transfers(self) -> list[JSON]:
        """Copies of the stored transfers, oldest first."""
        with self._lock:
            return copy.deepcopy(list(self._transfers.values()))

    @property
    def accounts(self) -> list[JSON]:
        """Copies of the stored connected accounts, oldest first."""
        with self._lock:
            return copy.deepcopy(list(self._accounts.values()))

    def transfer(self, transfer_id: str) -> JSON:
        with self._lock:
            return copy.deepcopy(self._transfers[transfer_id])

    def account(self, account_id: str) -> JSON:
        with self._lock:
            return copy.deepcopy(self._accounts[account_id])

    def balance(self, currency: str = "usd") -> int:
        """The platform's available balance in ``currency`` (minor units)."""
        with self._lock:
            return self._balances.get(currency.lower(), 0)

    def set_balance(self, currency: str, amount: int) -> None:
        with self._lock:
            self._balances[currency.lower()] = amount

    # --- scenario controls -------------------------------------------------------------

    def complete_onboarding(self, account_id: str) -> JSON:
        """Finish the account's onboarding as Stripe would, queueing ``account.updated``."""
        with self._lock:
            account = self._accounts[account_id]
            before = copy.deepcopy(account)
            account["charges_enabled"] = True
            account["payouts_enabled"] = True
            account["details_submitted"] = True
            account["capabilities"] = dict.fromkeys(account["capabilities"], "active")
            account["requirements"] = _requirements(done=True)
            previous = {key: before[key] for key in account if before[key] != account[key]}
            if previous:
                self._emit(
                    "account.updated",
                    account,
                    request=None,
                    previous_attributes=previous,
                    account_id=account_id,
                )
            return copy.deepcopy(account)

    def fail_next(
        self,
        count: int = 1,
        status: int = 500,
        after_effect: bool = False,
        path_prefix: str = "/v1/transfers",
        *,
        method: str | None = None,
        should_retry: bool | None = None,
    ) -> None:
        """Answer the next ``count`` matching requests with ``status`` and an ``api_error``.

        With ``after_effect`` the operation is done first (and its answer saved under the
        request's idempotency key), so a retry with the same key gets the real answer.
        ``should_retry`` sends ``Stripe-Should-Retry``, which the SDK obeys.
        """
        with self._lock:
            self._faults.append(
                _Fault(
                    "fail",
                    count,
                    after_effect,
                    path_prefix,
                    method,
                    status=status,
                    should_retry=should_retry,
                )
            )

    def delay_next(
        self,
        seconds: float,
        count: int = 1,
        after_effect: bool = True,
        path_prefix: str = "/v1/transfers",
        *,
        method: str | None = None,
    ) -> None:
        """Wait ``seconds`` before answering the next ``count`` matching requests.

        With ``after_effect`` (the default) the operation is done and saved first, so a
        client that times out has nonetheless created the object; without it the wait comes
        first, and a retry with the same key meanwhile gets 409 (request in progress).
        """
        with self._lock:
            self._faults.append(
                _Fault("delay", count, after_effect, path_prefix, method, seconds=seconds)
            )

    # --- webhooks ----------------------------------------------------------------------

    def pending_events(self) -> list[JSON]:
        """Copies of the events not yet taken, oldest first."""
        with self._lock:
            return [copy.deepcopy(self._events[event_id]) for event_id in self._pending]

    def take_events(self) -> list[JSON]:
        """Like :meth:`pending_events`, and empties the queue (the events stay retrievable)."""
        with self._lock:
            events = self.pending_events()
            self._pending.clear()
            return events

    @staticmethod
    def event_payload(event: Mapping[str, Any]) -> bytes:
        """The webhook request body Stripe would send for ``event``."""
        return json.dumps(event, indent=2).encode()

    @staticmethod
    def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
        """A ``Stripe-Signature`` header value for ``payload`` signed with ``secret``."""
        t = int(time.time()) if timestamp is None else timestamp
        mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256)
        return f"t={t},v1={mac.hexdigest()}"

    # --- request handling --------------------------------------------------------------

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.matches(method, path):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _sleep(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def _handle(
        self, method: str, target: str, body: bytes, headers: Mapping[str, str]
    ) -> _Response:
        """Answer one HTTP request (called from the server's handler threads)."""
        split = urlsplit(target)
        path = split.path
        request_id = _new_id("req", 14)
        base_headers = {"Request-Id": request_id}
        idempotency_key = headers.get("Idempotency-Key") or None
        version = headers.get("Stripe-Version") or None
        if version:
            base_headers["Stripe-Version"] = version

        def error(fault: StripeFault, extra: Mapping[str, str] | None = None) -> _Response:
            return _json_response(fault.status, fault.body(), {**base_headers, **(extra or {})})

        if path.startswith("/onboarding/"):
            return self._onboarding_page(path.removeprefix("/onboarding/"))

        try:
            encoded = split.query if method == "GET" else body.decode()
            params = parse_form(encoded)
        except StripeFault as bad:
            with self._lock:
                self._requests.append(RecordedRequest(method, path, {}, idempotency_key))
            return error(bad)
        except UnicodeDecodeError:
            return error(_invalid("The request body is not valid UTF-8."))

        with self._lock:
            self._requests.append(RecordedRequest(method, path, params, idempotency_key))
            if version:
                self._last_api_version = version
            auth = _authenticate(headers.get("Authorization"))
            if isinstance(auth, StripeFault):
                return error(auth, {"WWW-Authenticate": 'Bearer realm="Stripe"'})
            api_key = auth
            idempotent = method == "POST" and idempotency_key is not None
            scope = (api_key, idempotency_key or "")
            if idempotency_key is not None and len(idempotency_key) > 255:
                return error(_invalid("Idempotency keys can be at most 255 characters long."))
            if idempotent and scope not in self._saved:
                if scope in self._in_flight:
                    return error(_in_progress(cast(str, idempotency_key)))
                self._in_flight.add(scope)
            fault = self._take_fault(method, path)

        try:
            if fault is not None and not fault.after_effect:
                if fault.kind == "fail":
                    return error(_injected(fault), _retry_header(fault))
                self._sleep(fault.seconds)
            context = _Context(
                request_id,
                idempotency_key,
                self._api_version or version or DEFAULT_API_VERSION,
            )
            response = self._execute(method, path, params, context, api_key, base_headers)
        finally:
            if idempotent:
                with self._lock:
                    self._in_flight.discard(scope)

        if fault is not None and fault.after_effect:
            if fault.kind == "fail":
                return error(_injected(fault), _retry_header(fault))
            self._sleep(fault.seconds)
        return response

    def _execute(
        self,
        method: str,
        path: str,
        params: JSON,
        context: _Context,
        api_key: str,
        base_headers: Mapping[str, str],
    ) -> _Response:
        key = context.idempotency_key
        idempotent = method == "POST" and key is not None
        headers = dict(base_headers)
        if idempotent:
            headers["Idempotency-Key"] = cast(str, key)
        with self._lock:
            if idempotent:
                saved = self._saved.get((api_key, cast(str, key)))
                if saved is not None:
                    return self._replay(saved, method, path, params, cast(str, key), headers)
            try:
                route, argument, changes_state = self._route(method, path)
                status, body = route(context, params, argument)
                response = _json_response(status, body, headers)
                save = changes_state
            except StripeFault as fault:
                response = _json_response(fault.status, fault.body(), headers)
                save = fault.saved
            except Exception:  # a bug in the fake: answer as Stripe would, and say so
                traceback.print_exc()
                response = _json_response(
                    500,
                    StripeFault(500, "The fake Stripe server crashed.", type_="api_error").body(),
                    headers,
                )
                save = False
            if idempotent and save:
                self._saved[(api_key, cast(str, key))] = _Saved(
                    method, path, _fingerprint(params), response
                )
            return response

    def _replay(
        self,
        saved: _Saved,
        method: str,
        path: str,
        params: JSON,
        key: str,
        headers: Mapping[str, str],
    ) -> _Response:
        if (saved.method, saved.path) != (method, path):
            fault = StripeFault(
                400,
                "Keys for idempotent requests can only be used for the same endpoint they "
                f"were first used for ({saved.method} {saved.path}). Try using a key other "
                f"than '{key}' if you meant to execute a different request.",
                type_="idempotency_error",
            )
            return _json_response(400, fault.body(), headers)
        if saved.params_fingerprint != _fingerprint(params):
            fault = StripeFault(
                400,
                "Keys for idempotent requests can only be used with the same parameters they "
                f"were first used with. Try using a key other than '{key}' if you meant to "
                "execute a different request.",
                type_="idempotency_error",
            )
            return _json_response(400, fault.body(), headers)
        first = saved.response
        return _Response(
            first.status,
            first.body,
            {**first.headers, "Request-Id": headers["Request-Id"], "Idempotent-Replayed": "true"},
        )

    def _route(self, method: str, path: str) -> tuple[Route, str, bool]:
        for route_method, pattern, handler, changes_state in self._routes:
            match = pattern.match(path)
            if match and route_method == method:
                return handler, (match.group(1) if match.groups() else ""), changes_state
        raise StripeFault(
            404,
            f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
            "or we can help at https://support.stripe.com/.",
            saved=False,
        )

    def _onboarding_page(self, account_id: str) -> _Response:
        with self._lock:
            known = account_id in self._accounts
            link = self._account_links.get(account_id)
        if not known:
            return _Response(404, b"No such account\n", {"Content-Type": "text/plain"})
        self.complete_onboarding(account_id)
        if link is None:
            return _Response(200, b"Onboarding complete\n", {"Content-Type": "text/plain"})
        return _Response(302, b"", {"Location": link["return_url"]})

    def _emit(
        self,
        type_: str,
        obj: JSON,
        *,
        request: _Context | None,
        previous_attributes: JSON | None = None,
        account_id: str | None = None,
    ) -> JSON:
        data: JSON = {"object": copy.deepcopy(obj)}
        if previous_attributes is not None:
            data["previous_attributes"] = previous_attributes
        event: JSON = {
            "id": _new_id("evt"),
            "object": "event",
            "api_version": (
                request.api_version
                if request is not None
                else self._api_version or self._last_api_version or DEFAULT_API_VERSION
            ),
            "created": int(time.time()),
            "data": data,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {
                "id": request.request_id if request is not None else None,
                "idempotency_key": request.idempotency_key if request is not None else None,
            },
            "type": type_,
        }
        if account_id is not None:
            event["account"] = account_id
        self._events[event["id"]] = event
        self._pending.append(event["id"])
        return event

    # --- resources (called with the lock held) -----------------------------------------

    def _create_account(self, context: _Context, params: JSON, _: str) -> tuple[int, JSON]:
        _check_known(
            params,
            {
                "type",
                "email",
                "country",
                "capabilities",
                "metadata",
                "business_type",
                "business_profile",
                "controller",
                "default_currency",
                "settings",
                "tos_acceptance",
                "expand",
            },
        )
        account_type = _string(params, "type")
        if account_type is None and params.get("controller") is None:
            raise _invalid("Missing required param: type.", param="type", code="parameter_missing")
        if account_type is not None and account_type not in {"express", "standard", "custom"}:
            raise _invalid(
                f"Invalid type: must be one of custom, express, or standard (got {account_type})",
                param="type",
                code="parameter_invalid_string",
            )
        country = (_string(params, "country") or "US").upper()
        if not _COUNTRY.match(country):
            raise _invalid(f"Invalid country: {country}", param="country")
        capabilities = params.get("capabilities") or {}
        if not isinstance(capabilities, dict):
            raise _invalid("Invalid hash", param="capabilities", code="parameter_invalid_object")
        requested: dict[str, str] = {}
        for name, options in capabilities.items():
            if not isinstance(options, dict) or options.get("requested") not in {"true", "false"}:
                raise _invalid("Invalid boolean", param=f"capabilities[{name}][requested]")
            if options["requested"] == "true":
                requested[name] = "inactive"
        default_currency = _string(params, "default_currency") or (
            "eur" if country in _EURO_COUNTRIES else _COUNTRY_CURRENCY.get(country, "usd")
        )
        account: JSON = {
            "id": _new_id("acct", 16),
            "object": "account",
            "business_type": _string(params, "business_type"),
            "capabilities": requested,
            "charges_enabled": False,
            "controller": {"type": "application", "is_controller": True},
            "country": country,
            "created": int(time.time()),
            "default_currency": default_currency,
            "details_submitted": False,
            "email": _string(params, "email"),
            "external_accounts": {
                "object": "list",
                "data": [],
                "has_more": False,
                "total_count": 0,
                "url": "",
            },
            "livemode": False,
            "metadata": _metadata(params),
            "payouts_enabled": False,
            "requirements": _requirements(done=False),
            "type": account_type or "none",
        }
        account["external_accounts"]["url"] = f"/v1/accounts/{account['id']}/external_accounts"
        self._accounts[account["id"]] = account
        return 200, copy.deepcopy(account)

    def _retrieve_account(
        self, context: _Context, params: JSON, account_id: str
    ) -> tuple[int, JSON]:
        return 200, copy.deepcopy(self._get(self._accounts, account_id, "account"))

    def _list_accounts(self, context: _Context, params: JSON, _: str) -> tuple[int, JSON]:
        _check_known(params, {"limit", "starting_after", "ending_before", "created", "expand"})
        accept = _created_filter(params)
        items = [a for a in reversed(self._accounts.values()) if accept(a["created"])]
        return 200, copy.deepcopy(_page(items, params, "/v1/accounts"))

    def _create_account_link(self, context: _Context, params: JSON, _: str) -> tuple[int, JSON]:
        _check_known(
            params,
            {
                "account",
                "refresh_url",
                "return_url",
                "type",
                "collect",
                "collection_options",
                "expand",
            },
        )
        account_id = cast(str, _string(params, "account", required=True))
        link_type = cast(str, _string(params, "type", required=True))
        if link_type not in {"account_onboarding", "account_update"}:
            raise _invalid(
                f"Invalid type: must be one of account_onboarding or account_update "
                f"(got {link_type})",
                param="type",
                code="parameter_invalid_string",
            )
        refresh_url = _url(params, "refresh_url")
        return_url = _url(params, "return_url")
        if account_id not in self._accounts:
            raise _missing("account", account_id, param="account")
        now = int(time.time())
        link: JSON = {
            "object": "account_link",
            "created": now,
            "expires_at": now + ACCOUNT_LINK_TTL,
            "url": f"{self.url}/onboarding/{account_id}",
        }
        self._account_links[account_id] = {
            **link,
            "refresh_url": refresh_url,
            "return_url": return_url,
        }
        return 200, link

    def _create_transfer(self, context: _Context, params: JSON, _: str) -> tuple[int, JSON]:
        _check_known(
            params,
            {
                "amount",
                "currency",
                "destination",
                "description",
                "metadata",
                "transfer_group",
                "source_transaction",
                "source_type",
                "expand",
            },
        )
        amount = cast(int, _positive_int(params, "amount", required=True))
        currency = _currency(params)
        destination = cast(str, _string(params, "destination", required=True))
        metadata = _metadata(params)
        account = self._accounts.get(destination)
        if account is None:
            raise StripeFault(
                400,
                f"No such destination: '{destination}'",
                param="destination",
                code="resource_missing",
                saved=False,
            )
        if not account["payouts_enabled"] or account["capabilities"].get("transfers") != "active":
            raise StripeFault(
                400,
                "Your destination account needs to have at least one of the following "
                "capabilities enabled: transfers, crypto_transfers, legacy_payments",
                param="destination",
                code="insufficient_capabilities_for_transfer",
            )
        available = self._balances.get(currency, 0)
        if amount > available:
            raise StripeFault(
                400,
                "You have insufficient available funds in your Stripe account. Try adding "
                "funds directly to your available balance by creating Charges using the "
                "4000000000000077 test card. See: https://stripe.com/docs/testing#available-balance",
                code="balance_insufficient",
            )
        self._balances[currency] = available - amount
        transfer_id = _new_id("tr")
        transfer: JSON = {
            "id": transfer_id,
            "object": "transfer",
            "amount": amount,
            "amount_reversed": 0,
            "balance_transaction": _new_id("txn"),
            "created": int(time.time()),
            "currency": currency,
            "description": _string(params, "description"),
            "destination": destination,
            "destination_payment": _new_id("py"),
            "livemode": False,
            "metadata": metadata,
            "reversals": {
                "object": "list",
                "data": [],
                "has_more": False,
                "total_count": 0,
                "url": f"/v1/transfers/{transfer_id}/reversals",
            },
            "reversed": False,
            "source_transaction": _string(params, "source_transaction"),
            "source_type": _string(params, "source_type") or "card",
            "transfer_group": _string(params, "transfer_group"),
        }
        self._transfers[transfer_id] = transfer
        self._emit("transfer.created", transfer, request=context)
        return 200, copy.deepcopy(transfer)

    def _retrieve_transfer(
        self, context: _Context, params: JSON, transfer_id: str
    ) -> tuple[int, JSON]:
        return 200, copy.deepcopy(self._get(self._transfers, transfer_id, "transfer"))

    def _list_transfers(self, context: _Context, params: JSON, _: str) -> tuple[int, JSON]:
        _check_known(
            params,
            {
                "limit",
                "starting_after",
                "ending_before",
                "destination",
                "transfer_group",
                "created",
                "expand",
            },
        )
        destination = _string(params, "destination")
        group = _string(params, "transfer_group")
        accept = _created_filter(params)
        items = [
            t
            for t in reversed(self._transfers.values())
            if (destination is None or t["destination"] == destination)
            and (group is None or t["transfer_group"] == group)
            and accept(t["created"])
        ]
        return 200, copy.deepcopy(_page(items, params, "/v1/transfers"))

    def _create_reversal(
        self, context: _Context, params: JSON, transfer_id: str
    ) -> tuple[int, JSON]:
        _check_known(
            params, {"amount", "description", "metadata", "refund_application_fee", "expand"}
        )
        transfer = self._get(self._transfers, transfer_id, "transfer")
        requested = _positive_int(params, "amount")
        metadata = _metadata(params)
        remaining = transfer["amount"] - transfer["amount_reversed"]
        amount = remaining if requested is None else requested
        if amount > remaining or amount == 0:
            raise StripeFault(
                400,
                f"Amount ({amount}) is greater than the amount left to reverse on transfer "
                f"{transfer_id} ({remaining}).",
                param="amount",
            )
        reversal: JSON = {
            "id": _new_id("trr"),
            "object": "transfer_reversal",
            "amount": amount,
            "balance_transaction": _new_id("txn"),
            "created": int(time.time()),
            "currency": transfer["currency"],
            "destination_payment_refund": _new_id("pyr"),
            "livemode": False,
            "metadata": metadata,
            "source_refund": None,
            "transfer": transfer_id,
        }
        transfer["amount_reversed"] += amount
        transfer["reversed"] = transfer["amount_reversed"] == transfer["amount"]
        reversals = transfer["reversals"]
        reversals["data"].insert(0, reversal)
        reversals["total_count"] += 1
        currency = transfer["currency"]
        self._balances[currency] = self._balances.get(currency, 0) + amount
        self._emit("transfer.reversed", transfer, request=context)
        return 200, copy.deepcopy(reversal)

    def _list_reversals(
        self, context: _Context, params: JSON, transfer_id: str
    ) -> tuple[int, JSON]:
        _check_known(params, {"limit", "starting_after", "ending_before", "expand"})
        transfer = self._get(self._transfers, transfer_id, "transfer")
        url = f"/v1/transfers/{transfer_id}/reversals"
        return 200, copy.deepcopy(_page(transfer["reversals"]["data"], params, url))

    def _retrieve_balance(self, context: _Context, params: JSON, _: str) -> tuple[int, JSON]:
        return 200, {
            "object": "balance",
            "available": [
                {"amount": amount, "currency": currency, "source_types": {"card": amount}}
                for currency, amount in sorted(self._balances.items())
            ],
            "livemode": False,
            "pending": [],
        }

    def _retrieve_event(self, context: _Context, params: JSON, event_id: str) -> tuple[int, JSON]:
        return 200, copy.deepcopy(self._get(self._events, event_id, "event"))

    def _list_events(self, context: _Context, params: JSON, _: str) -> tuple[int, JSON]:
        _check_known(
            params, {"limit", "starting_after", "ending_before", "type", "created", "expand"}
        )
        type_ = _string(params, "type")
        accept = _created_filter(params)
        items = [
            e
            for e in reversed(self._events.values())
            if (type_ is None or e["type"] == type_) and accept(e["created"])
        ]
        return 200, copy.deepcopy(_page(items, params, "/v1/events"))

    @staticmethod
    def _get(store: Mapping[str, JSON], object_id: str, kind: str) -> JSON:
        try:
            return store[object_id]
        except KeyError:
            raise _missing(kind, object_id, status=404) from None


def _requirements(*, done: bool) -> JSON:
    due = [] if done else list(_NOT_ONBOARDED_DUE)
    return {
        "currently_due": due,
        "eventually_due": list(due),
        "past_due": list(due),
        "pending_verification": [],
        "disabled_reason": None if done else "requirements.past_due",
        "errors": [],
    }


def _missing(
    kind: str, object_id: str, *, param: str | None = "id", status: int = 400
) -> StripeFault:
    return StripeFault(
        status,
        f"No such {kind}: '{object_id}'",
        param=param,
        code="resource_missing",
        saved=False,
    )


def _authenticate(header: str | None) -> str | StripeFault:
    """The request's API key, or the 401 Stripe answers."""
    if not header:
        return StripeFault(
            401,
            "You did not provide an API key. You need to provide your API key in the "
            "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
            "YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, "
            "or we can help at https://support.stripe.com/.",
            saved=False,
        )
    scheme, _, key = header.partition(" ")
    if scheme != "Bearer" or not _API_KEY.match(key):
        shown = f"{key[:8]}{'*' * 12}{key[-4:]}" if len(key) > 12 else key
        return StripeFault(401, f"Invalid API Key provided: {shown}", saved=False)
    return key


def _injected(fault: _Fault) -> StripeFault:
    return StripeFault(
        fault.status,
        "An unknown error occurred (fault injected by the fake Stripe server).",
        type_="api_error",
        saved=False,
    )


def _retry_header(fault: _Fault) -> dict[str, str]:
    if fault.should_retry is None:
        return {}
    return {"Stripe-Should-Retry": "true" if fault.should_retry else "false"}


def _in_progress(key: str) -> StripeFault:
    return StripeFault(
        409,
        "There is currently another in-progress request using this Idempotent Key (that "
        f"probably means you submitted twice, and the other request is still going through): "
        f"{key}. Please try again later.",
        type_="idempotency_error",
        code="idempotency_key_in_use",
        saved=False,
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeStripe) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeStripe/1.0"

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def do_DELETE(self) -> None:
        self._answer("DELETE")

    def _answer(self, method: str) -> None:
        fake = cast(_Server, self.server).fake
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = dict(self.headers.items())
        response = fake._handle(method, self.path, body, _CaseInsensitive(headers))
        try:
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (e.g. its timeout fired during delay_next)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # FakeStripe.requests records what matters


class _CaseInsensitive(dict[str, str]):
    """Request headers, looked up regardless of case, as HTTP wants."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        super().__init__({name.lower(): value for name, value in headers.items()})

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)
