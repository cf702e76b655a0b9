"""The emulator's knobs: one dataclass shared by the command line and ``POST /_sim/config``.

Every knob can be changed while the emulator runs, so a test changes behaviour without a
restart (fal_client reads its host once, at import, so restarting on a new port is no option).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

MODES = ("queue", "reject")
#: fal's request history: served (documented), absent (404), forbidden for this key (403), or
#: unavailable (503 while the queue itself still works: an outage of the API host alone).
HISTORY_MODES = ("on", "absent", "forbidden", "unavailable")
#: The status stream: as documented, absent (404 or 405), broken after its first event, or
#: idle (keep-alive comments, never an event, never closed by the server).
STREAM_MODES = ("on", "absent_404", "absent_405", "broken", "idle")
#: GET of a result before COMPLETED (fal documents no answer): 400 ``Request is still in
#: progress`` (what fal answered when observed), 404 ``Request not found``, or 202 with the
#: status body.
EARLY_RESULT_MODES = ("400_in_progress", "404_not_found", "202_status")
#: GET of an expired result (fal documents no answer): 404 ``result_expired``, 410, or a plain
#: 404 indistinguishable from an unknown request.
EXPIRED_RESULT_MODES = ("404_expired", "410_gone", "404_not_found")
#: Cancel status codes (fal documents only the body's ``status``): ``reported`` = 200 OK /
#: 202 CANCELLATION_REQUESTED / 400 ALREADY_COMPLETED / 404 NOT_FOUND (third-party pages);
#: ``all_200`` = every answer 200, the outcome only in the body.
CANCEL_CODE_MODES = ("reported", "all_200")
CHOICES: dict[str, tuple[str, ...]] = {
    "mode": MODES,
    "history": HISTORY_MODES,
    "stream": STREAM_MODES,
    "early_result": EARLY_RESULT_MODES,
    "expired_result": EXPIRED_RESULT_MODES,
    "cancel_codes": CANCEL_CODE_MODES,
}
#: Upper bounds of numeric knobs: finite, and small enough that timers and sleeps stay sane.
MAX_SECONDS = 7 * 24 * 3600.0
MAX_TIME_SCALE = 1000.0
MAX_CONCURRENCY = 100_000

#: Marker words: a prompt containing one triggers that fault on every request with it; the
#: ``_ONCE`` form (e.g. ``SIM_5XX_ONCE``) only on the first request with that exact input,
#: so a client that retries (or resubmits) recovers.
TRIGGERS = {
    "error_5xx": "SIM_5XX",
    "ingress_503": "SIM_503",
    "lose_submit": "SIM_LOSE_SUBMIT",
    "hang": "SIM_HANG",
    "expire": "SIM_EXPIRE",
}


@dataclass
class SimConfig:
    """Behaviour of the emulator. Latencies are mean seconds at time scale 1."""

    mode: str = "queue"
    concurrency: int = 10
    time_scale: float = 1.0
    seed: int = 0
    latency_low: float = 1.5
    latency_medium: float = 8.0
    latency_high: float = 25.0
    #: Per-request probability of each fault (deterministic for a seed and input).
    error_5xx_rate: float = 0.0
    ingress_503_rate: float = 0.0  # per status poll / stream / result call
    lose_submit_rate: float = 0.0
    hang_rate: float = 0.0
    expire_rate: float = 0.0
    policy_rate: float = 0.0
    #: Prompts containing this word (case-insensitive) are refused: content_policy_violation.
    policy_word: str = "forbidden"
    #: How many polls of a SIM_503 request answer 503 before it is let through.
    ingress_burst: int = 3
    #: fal's request history lagging behind submits: while True, requests submitted meanwhile
    #: are missing from the history; set it back to False and history has caught up. A switch,
    #: not a delay, so "the look-up came before fal's history had it" is deterministic.
    history_paused: bool = False
    #: ``on`` (documented), ``absent`` (404) or ``forbidden`` (403 for this key).
    history: str = "on"
    #: fal does not say whether queued or running requests are listed: False lists them
    #: (with ``ended_at``/``status_code`` null), True lists finished requests only.
    history_finished_only: bool = False
    #: Status stream behaviour, one of STREAM_MODES (``on``: as documented).
    stream: str = "on"
    early_result: str = "400_in_progress"
    expired_result: str = "404_expired"
    cancel_codes: str = "reported"
    #: How many result GETs of each *successful* request answer 500 ``internal_error`` before
    #: the output is served: fal documents a result as the output or the model's own error,
    #: never a failing GET of a request whose COMPLETED status carried no error.
    result_5xx: int = 0
    #: Seconds (times time_scale) a result stays readable after completion; fal keeps ~1 h.
    result_ttl: float = 3600.0
    #: Seconds sent as Retry-After on 429s (fal sends none; None = omit the header).
    retry_after: float | None = None
    #: When set, only this key is accepted (any other gets 401). Never logged or echoed.
    valid_key: str | None = field(default=None, repr=False)

    def validate(self) -> None:
        """Raise ValueError naming the knob and the accepted range."""
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}"
                )
        _check_int("concurrency", self.concurrency, 1, MAX_CONCURRENCY)
        _check_int("ingress_burst", self.ingress_burst, 0, 1_000_000)
        _check_int("result_5xx", self.result_5xx, 0, 1_000_000)
        _check_number("time_scale", self.time_scale, 0.0, MAX_TIME_SCALE, low_open=True)
        for name in ("latency_low", "latency_medium", "latency_high", "result_ttl"):
            _check_number(name, getattr(self, name), 0.0, MAX_SECONDS)
        for name in RATE_KNOBS:
            _check_number(name, getattr(self, name), 0.0, 1.0)
        if self.retry_after is not None:
            _check_number("retry_after", self.retry_after, 0.0, MAX_SECONDS)
        if not self.policy_word.strip():
            raise ValueError("policy_word must not be empty")

    def updated(self, changes: dict[str, Any]) -> SimConfig:
        """A validated copy with ``changes`` applied; unknown knobs are an error."""
        known = {f.name: f for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise ValueError(
                f"unknown knob(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        values = {name: _coerce(name, value) for name, value in changes.items()}
        new = dataclasses.replace(self, **values)
        new.validate()
        return new

    def public(self) -> dict[str, Any]:
        """The knobs as JSON, with the valid key reduced to whether one is set."""
        data = dataclasses.asdict(self)
        data["valid_key"] = "<set>" if self.valid_key else None
        return data

    def latency_mean(self, quality: str) -> float:
        return {
            "low": self.latency_low,
            "medium": self.latency_medium,
            "high": self.latency_high,
        }.get(quality, self.latency_high)


INT_KNOBS = ("concurrency", "seed", "ingress_burst", "result_5xx")
STR_KNOBS = ("policy_word", *CHOICES)
OPTIONAL_KNOBS = ("retry_after", "valid_key")
BOOL_KNOBS = ("history_paused", "history_finished_only")


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, not {value!r}")


def _check_number(
    name: str, value: object, low: float, high: float, *, low_open: bool = False
) -> None:
    """A finite number in [low, high] (or (low, high]): NaN and 1e400 (inf) are refused."""
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value > low if low_open else value >= low)
        and value <= high
    )
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(
            f"{name} must be a finite number in {bracket}{low:g}, {high:g}], not {value!r}"
        )


def _coerce(name: str, value: Any) -> Any:
    """JSON value -> knob type, with an error naming the knob."""
    if name in OPTIONAL_KNOBS and value is None:
        return None
    if name in BOOL_KNOBS:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, not {value!r}")
        return value
    if name in STR_KNOBS or name == "valid_key":
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string, not {value!r}")
        return value
    if name in INT_KNOBS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, not {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, not {value!r}")
    return float(value)


RATE_KNOBS = (
    "error_5xx_rate",
    "ingress_503_rate",
    "lose_submit_rate",
    "hang_rate",
    "expire_rate",
    "policy_rate",
)


def build_parser() -> argparse.ArgumentParser:
    defaults = SimConfig()
    parser = argparse.ArgumentParser(
        prog="falassets sim",
        description=(
            "HTTPS emulator of fal.ai's queue API for openai/gpt-image-2 (and /edit). Prints "
            "export lines for FAL_QUEUE_RUN_HOST, SSL_CERT_FILE and NO_PROXY, then serves. "
            "Fault triggers in prompts: "
            + ", ".join(f"{v} (or {v}_ONCE)" for v in TRIGGERS.values())
            + "; the policy word triggers content_policy_violation."
        ),
        epilog=(
            "The built-in emulator falassets starts without FAL_KEY: "
            "`falassets sim status` | `falassets sim stop [--force]`."
        ),
    )
    add = parser.add_argument
    add("--port", type=int, default=0, help="port on 127.0.0.1 (0: pick a free one)")
    add("--concurrency", type=int, default=defaults.concurrency, help="requests running at once")
    add("--mode", choices=MODES, default=defaults.mode, help="above the limit: queue or 429")
    add("--time-scale", type=float, default=defaults.time_scale, help="multiplies all latencies")
    add("--seed", type=int, default=defaults.seed, help="seed for jitter and fault rates")
    add("--latency-low", type=float, default=defaults.latency_low, help="mean seconds, low")
    add("--latency-medium", type=float, default=defaults.latency_medium, help="mean s, medium")
    add("--latency-high", type=float, default=defaults.latency_high, help="mean s, high")
    add("--5xx-rate", dest="error_5xx_rate", type=float, default=0.0, help="runner 500 at end")
    add("--ingress-503-rate", type=float, default=0.0, help="nginx 503 on polls/stream/result")
    add("--lose-submit-rate", type=float, default=0.0, help="accepted, answer lost")
    add("--hang-rate", type=float, default=0.0, help="never finishes until cancelled")
    add("--expire-rate", type=float, default=0.0, help="result expired right at completion")
    add("--policy-rate", type=float, default=0.0, help="content_policy_violation")
    add("--policy-word", default=defaults.policy_word, help="prompt word that is refused")
    add("--ingress-burst", type=int, default=defaults.ingress_burst, help="503s per SIM_503")
    add("--history-paused", action="store_true", help="history lists no new request yet")
    add("--result-5xx", type=int, default=0, help="500s on each good result's first GETs")
    add("--result-ttl", type=float, default=defaults.result_ttl, help="s (scaled) results live")
    add("--retry-after", type=float, default=None, help="send Retry-After (s) on 429s")
    add("--history", choices=HISTORY_MODES, default=defaults.history, help="request history")
    add("--history-finished-only", action="store_true", help="history omits live requests")
    add("--stream", choices=STREAM_MODES, default=defaults.stream, help="status stream")
    add("--early-result", choices=EARLY_RESULT_MODES, default=defaults.early_result)
    add("--expired-result", choices=EXPIRED_RESULT_MODES, default=defaults.expired_result)
    add("--cancel-codes", choices=CANCEL_CODE_MODES, default=defaults.cancel_codes)
    add("--valid-key", default=None, help="accept only this key (others: 401)")
    add("--cert-dir", default=None, help="where the CA (ca.pem) and server cert live")
    add("--ledger-file", default=None, help="append every request's outcome here (JSONL)")
    add("--state-file", default=None, help="persist accepted requests across restarts")
    add("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return parser


def config_from_args(args: argparse.Namespace) -> SimConfig:
    names = {f.name for f in dataclasses.fields(SimConfig)}
    config = SimConfig(**{k: v for k, v in vars(args).items() if k in names})
    config.validate()
    return config
