"""One line of progress for long renders, the same on a terminal, in CI logs and in Dagster."""

from __future__ import annotations

from falassets.engine.render_engine import Progress


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def format_progress(progress: Progress) -> str:
    """``412/1000 done · 3 failed · 10 in flight (8 running, 2 in fal's queue) · 96.4/min ·
    ETA 6m06s · $4.12 spent``: the split shows the running level fal actually grants."""
    at_fal = ""
    if progress.waiting_at_fal or progress.running_at_fal:
        at_fal = f" ({progress.running_at_fal} running, {progress.waiting_at_fal} in fal's queue)"
    return (
        f"{progress.done}/{progress.total} done · {progress.failed} failed · "
        f"{progress.in_flight} in flight{at_fal} · {progress.renders_per_minute:.1f}/min · "
        f"ETA {format_duration(progress.eta_s)} · ${progress.spend_usd:,.2f} spent"
    )
