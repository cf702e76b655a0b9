"""What to do about a failed fal call, decided by the kind of failure, in one place.

fal tells failures apart by HTTP status, by an ``error_type`` (body or ``X-Fal-Error-Type``)
and, for ingress errors, by the absence of ``x-fal-request-id``. The engine only asks
``classify_*`` for a :class:`Failure` and acts on its :class:`Action`; nothing else in the
code base looks at status codes.
"""

from __future__ import annotations

import email.utils
import enum
import random
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from fal_client import FalClientHTTPError


class Action(enum.Enum):
    RETRY = "retry"  # transient: try again with jittered exponential backoff, within a budget
    RATE_LIMITED = "rate_limited"  # 429: back off (Retry-After), lower the in-flight target
    REFUSED = "refused"  # the input will never work (422, content policy): record, never retry
    AUTH = "auth"  # fal cannot be used as configured (key refused, host not trusted): stop all
    EXPIRED = "expired"  # the result is gone: resubmit once
    # fal finished the request (and billed it) but we could not fetch its result or output:
    # collect it again later, never resubmit (that would bill the same input twice)
    UNCOLLECTED = "uncollected"


@dataclass(frozen=True)
class Failure:
    """One classified failure, ready for the journal (``error_type``, ``error_message``)."""

    action: Action
    error_type: str
    message: str
    http_status: int | None = None
    retry_after_s: float | None = None

    @property
    def retryable(self) -> bool:
        return self.action in (Action.RETRY, Action.RATE_LIMITED)


# Status codes of a request that fal will not run differently next time.
_REFUSAL_STATUSES = {400, 404, 405, 413, 415, 422}
# error_type values that mean "this input is refused", whatever the status code says.
_REFUSAL_TYPES = {
    "content_policy_violation",
    "image_too_large",
    "file_download_error",
    "no_media_generated",
}
_AUTH_STATUSES = {401, 403}
#: error_type of a connection refused by our own TLS check: no submit can ever get through.
TLS_UNTRUSTED = "tls_untrusted"
#: How that failure's message begins (the CLI and the run summary look for it).
UNTRUSTED_HOST = "fal's host certificate is not trusted"
_TRANSIENT_STATUSES = {408, 409, 425, 500, 502, 503, 504, 520, 521, 522, 524}
MAX_MESSAGE_CHARS = 500


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(
    retry: int, *, base_s: float = 0.5, cap_s: float = 30.0, rng: random.Random | None = None
) -> float:
    """Jittered exponential backoff for the ``retry``-th retry (1-based): equal jitter, so a
    herd of clients spreads out while no delay collapses to zero."""
    ceiling = min(cap_s, base_s * (2 ** max(0, retry - 1)))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


def _detail_type_and_message(body: Any) -> tuple[str | None, str | None]:
    """fal's two error shapes: ``{"detail": [{"type", "msg"}]}``, ``{"detail", "error_type"}``."""
    if not isinstance(body, dict):
        return None, None
    detail = body.get("detail")
    error_type = body.get("error_type") if isinstance(body.get("error_type"), str) else None
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        first = detail[0]
        kind = first.get("type") if isinstance(first.get("type"), str) else None
        parts = []
        for entry in detail[:3]:
            if isinstance(entry, dict):
                loc = ".".join(str(p) for p in entry.get("loc", []) if p != "body")
                parts.append(f"{loc}: {entry.get('msg')}" if loc else str(entry.get("msg")))
        return error_type or kind, "; ".join(parts) or None
    if isinstance(detail, str):
        return error_type, detail
    return error_type, None


def is_ingress_error(status: int, headers: Mapping[str, str], text: str) -> bool:
    """fal's own heuristic: a 502/503/504 from the load balancer, not from fal's app."""
    return (
        status in (502, 503, 504)
        and "x-fal-request-id" not in {k.lower() for k in headers}
        and "nginx" in text.lower()
    )


def is_transport_failure(error: BaseException) -> bool:
    """Whether a failed call says nothing about the request itself, only about the way to
    it: the connection, a timeout, or fal's load balancer (an ingress error)."""
    if isinstance(error, FalClientHTTPError):
        response = error.response
        return is_ingress_error(error.status_code, response.headers, response.text)
    return isinstance(error, httpx.TransportError | httpx.TimeoutException)


def classify_response(status: int, headers: Mapping[str, str], body: Any, text: str) -> Failure:
    """Classify a non-2xx answer of fal's queue (submit, status, result, stream)."""
    lower = {k.lower(): v for k, v in headers.items()}
    body_type, body_message = _detail_type_and_message(body)
    error_type = body_type or lower.get("x-fal-error-type")
    message = _clip(body_message or text or f"HTTP {status}")
    if status in _AUTH_STATUSES:
        return Failure(
            Action.AUTH,
            error_type or ("unauthorized" if status == 401 else "forbidden"),
            f"fal rejected the API key (HTTP {status}): FAL_KEY is wrong, expired or lacks "
            "access to this endpoint. Set a valid key in FAL_KEY.",
            status,
        )
    if status == 429:
        return Failure(
            Action.RATE_LIMITED,
            error_type or "rate_limited",
            message,
            status,
            parse_retry_after(lower.get("retry-after")),
        )
    if error_type in _REFUSAL_TYPES:
        return Failure(Action.REFUSED, error_type, message, status)
    if is_ingress_error(status, headers, text):
        return Failure(Action.RETRY, error_type or "ingress_error", message, status)
    if status in _TRANSIENT_STATUSES or status >= 500:
        retryable = lower.get("x-fal-retryable", "true").strip().lower() != "false"
        action = Action.RETRY if retryable else Action.REFUSED
        return Failure(action, error_type or f"http_{status}", message, status)
    if status in _REFUSAL_STATUSES or 400 <= status < 500:
        return Failure(Action.REFUSED, error_type or f"http_{status}", message, status)
    return Failure(Action.RETRY, error_type or f"http_{status}", message, status)


def classify_http_error(error: FalClientHTTPError) -> Failure:
    """fal_client's error type carries the response: classify it the same way."""
    response = error.response
    try:
        body = response.json()
    except ValueError:
        body = None
    return classify_response(error.status_code, dict(response.headers), body, response.text)


def classify_exception(error: BaseException) -> Failure:
    """Transport errors and timeouts are transient; an HTTP error is classified by its answer."""
    if isinstance(error, FalClientHTTPError):
        return classify_http_error(error)
    if isinstance(error, httpx.HTTPStatusError):
        response = error.response
        try:
            body = response.json()
        except ValueError:
            body = None
        return classify_response(response.status_code, dict(response.headers), body, response.text)
    if isinstance(error, httpx.ConnectError) and _certificate_rejected(error):
        return Failure(
            Action.AUTH,
            TLS_UNTRUSTED,
            _clip(
                f"{UNTRUSTED_HOST} ({error}). Fix: point SSL_CERT_FILE at a CA bundle that "
                "trusts it, or unset SSL_CERT_FILE to use the system's"
            ),
        )
    if isinstance(error, httpx.TimeoutException | TimeoutError):
        return Failure(Action.RETRY, "transport_timeout", _clip(f"timed out: {error!r}"))
    if isinstance(error, httpx.TransportError | OSError):
        return Failure(Action.RETRY, "transport", _clip(f"{type(error).__name__}: {error}"))
    raise TypeError(f"not a fal call failure: {error!r}")


def _certificate_rejected(error: BaseException) -> bool:
    """Whether a connection failed our verification of the server's certificate: retrying
    cannot help, only a trust setting can."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(error)


def _clip(message: str) -> str:
    message = " ".join(str(message).split())
    return message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 1] + "…"
