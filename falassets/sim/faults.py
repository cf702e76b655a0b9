"""Which faults hit which request: decided once, at submit, and reproducible.

A draw depends on the seed, the fault, the request's canonical input and how many times that
input was submitted before, never on arrival order or wall time. So the same batch against
the same seed meets the same faults even with many requests in flight, and a client that
resubmits an input gets a fresh draw (as a retry at fal would meet a fresh runner).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from falassets.sim.config import TRIGGERS, SimConfig


def draw(seed: int, *parts: object) -> float:
    """A uniform number in [0, 1) fixed by ``seed`` and ``parts``."""
    text = "\x1f".join([str(seed), *map(str, parts)])
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class FaultPlan:
    """The faults one request will meet."""

    error_5xx: bool = False
    ingress_503: bool = False  # a burst of 503s on its first polls
    lose_submit: bool = False
    hang: bool = False
    expire: bool = False
    policy: bool = False

    def names(self) -> list[str]:
        return [name for name, on in self.__dict__.items() if on]


def _triggered(prompt: str, marker: str, occurrence: int) -> bool:
    """``SIM_X`` always fires; ``SIM_X_ONCE`` only on the first submit of an input."""
    if f"{marker}_ONCE" in prompt:
        return occurrence == 0
    return marker in prompt.replace(f"{marker}_ONCE", "")


def plan_faults(config: SimConfig, prompt: str, input_key: str, occurrence: int) -> FaultPlan:
    """The fault plan of a request with this prompt, canonical input and occurrence number."""

    def hit(kind: str, rate: float) -> bool:
        marker = TRIGGERS.get(kind)
        if marker and _triggered(prompt, marker, occurrence):
            return True
        return rate > 0 and draw(config.seed, kind, input_key, occurrence) < rate

    policy = config.policy_word.lower() in prompt.lower() or (
        config.policy_rate > 0 and draw(config.seed, "policy", input_key) < config.policy_rate
    )
    return FaultPlan(
        error_5xx=hit("error_5xx", config.error_5xx_rate),
        ingress_503=TRIGGERS["ingress_503"] in prompt,
        lose_submit=hit("lose_submit", config.lose_submit_rate),
        hang=hit("hang", config.hang_rate),
        expire=hit("expire", config.expire_rate),
        policy=policy,
    )


def ingress_503_now(config: SimConfig, plan: FaultPlan, input_key: str, poll_index: int) -> bool:
    """Whether poll number ``poll_index`` of a request answers an nginx 503."""
    if plan.ingress_503 and poll_index < config.ingress_burst:
        return True
    rate = config.ingress_503_rate
    return rate > 0 and draw(config.seed, "ingress", input_key, poll_index) < rate
