"""Failures are handled by kind: what is retried, what is never retried, what stops a batch."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from falassets.engine.retry import (
    Action,
    backoff_delay,
    classify_exception,
    classify_response,
    parse_retry_after,
)

NGINX_503 = (
    "<html><head><title>503 Service Temporarily Unavailable</title></head><body>nginx</body>"
)


def test_content_policy_violation_is_refused_with_its_type() -> None:
    body = {
        "detail": [
            {"loc": ["body", "prompt"], "msg": "flagged", "type": "content_policy_violation"}
        ]
    }
    failure = classify_response(422, {"x-fal-request-id": "r1"}, body, "")
    assert failure.action is Action.REFUSED
    assert failure.error_type == "content_policy_violation"
    assert "prompt: flagged" in failure.message
    assert not failure.retryable


def test_validation_error_is_refused_and_keeps_pydantic_type() -> None:
    body = {"detail": [{"loc": ["body", "quality"], "msg": "bad", "type": "enum"}]}
    failure = classify_response(422, {}, body, "")
    assert (failure.action, failure.error_type, failure.http_status) == (
        Action.REFUSED,
        "enum",
        422,
    )


def test_ingress_503_without_request_id_is_retried() -> None:
    failure = classify_response(503, {"content-type": "text/html"}, None, NGINX_503)
    assert failure.action is Action.RETRY
    assert failure.error_type == "ingress_error"


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (500, "runner_server_error"),
        (502, "runner_incomplete_response"),
        (503, "runner_disconnected"),
    ],
)
def test_runner_5xx_is_retried_with_fal_error_type(status: int, error_type: str) -> None:
    body = {"detail": "runner went away", "error_type": error_type}
    failure = classify_response(status, {"x-fal-request-id": "r"}, body, "")
    assert failure.action is Action.RETRY
    assert failure.error_type == error_type


def test_fal_says_not_retryable() -> None:
    body = {"detail": "no", "error_type": "internal_error"}
    failure = classify_response(500, {"X-Fal-Retryable": "false"}, body, "")
    assert failure.action is Action.REFUSED


@pytest.mark.parametrize("status", [401, 403])
def test_wrong_key_stops_the_batch_without_echoing_anything(status: int) -> None:
    secret = "sk-live-0123456789"
    failure = classify_response(status, {}, {"detail": f"bad key {secret}"}, f"bad key {secret}")
    assert failure.action is Action.AUTH
    assert secret not in failure.message
    assert "FAL_KEY" in failure.message


def test_429_carries_retry_after() -> None:
    failure = classify_response(429, {"Retry-After": "3"}, {"detail": "slow down"}, "")
    assert failure.action is Action.RATE_LIMITED
    assert failure.retry_after_s == 3.0


def test_retry_after_accepts_http_dates_and_rejects_garbage() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert parse_retry_after(header, now=now.timestamp()) == pytest.approx(7.0)
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("-5") == 0.0


def test_transport_errors_and_timeouts_are_transient() -> None:
    import httpx

    assert classify_exception(httpx.ReadError("reset")).action is Action.RETRY
    timeout = classify_exception(httpx.ReadTimeout("slow"))
    assert (timeout.action, timeout.error_type) == (Action.RETRY, "transport_timeout")
    with pytest.raises(TypeError):
        classify_exception(ValueError("not a fal failure"))


def test_backoff_grows_is_jittered_and_capped() -> None:
    rng = random.Random(7)
    first = [backoff_delay(1, base_s=1.0, cap_s=8.0, rng=rng) for _ in range(200)]
    fourth = [backoff_delay(4, base_s=1.0, cap_s=8.0, rng=rng) for _ in range(200)]
    late = [backoff_delay(30, base_s=1.0, cap_s=8.0, rng=rng) for _ in range(200)]
    assert all(0.5 <= d <= 1.0 for d in first)
    assert all(4.0 <= d <= 8.0 for d in fourth)
    assert max(late) <= 8.0
    assert len({round(d, 6) for d in first}) > 100  # spread, not a thundering herd
