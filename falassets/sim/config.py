"""The emulator's knobs: one dataclass shared by the command line and ``POST /_sim/config``.

Every knob can be changed while the emulator runs, so a test changes behaviour without a
restart (fal_client reads its host once, at import, so restarting on a new port is no option).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any

MODES = ("queue", "reject")

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
    #: Seconds (times time_scale) a result stays readable after completion; fal keeps ~1 h.
    result_ttl: float = 3600.0
    #: Seconds sent as Retry-After on 429s (fal sends none; None = omit the header).
    retry_after: float | None = None
    #: When set, only this key is accepted (any other gets 401). Never logged or echoed.
    valid_key: str | None = field(default=None, repr=False)

    def validate(self) -> None:
        """Raise ValueError naming the knob and the accepted range."""
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise ValueError(f"concurrency must be an integer >= 1, not {self.concurrency!r}")
        if self.time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, not {self.time_scale!r}")
        for name in ("latency_low", "latency_medium", "latency_high", "result_ttl"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 seconds")
        for name in RATE_KNOBS:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability between 0 and 1")
        if self.ingress_burst < 0:
            raise ValueError("ingress_burst must be >= 0")
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError("retry_after must be >= 0 seconds")
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


INT_KNOBS = ("concurrency", "seed", "ingress_burst")
STR_KNOBS = ("mode", "policy_word")
OPTIONAL_KNOBS = ("retry_after", "valid_key")
BOOL_KNOBS = ("history_paused",)


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
    add("--result-ttl", type=float, default=defaults.result_ttl, help="s (scaled) results live")
    add("--retry-after", type=float, default=None, help="Retry-After seconds on 429s")
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
