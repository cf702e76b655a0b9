"""Setting up fal's environment: an explicit call made by the entry points, never an import.

Entry points (the CLI, the Dagster definitions its code servers and run workers load, the
review page) call :func:`configure`; whatever is about to render calls :func:`prepare_fal`,
which also starts (or reuses) the built-in emulator when there is no key and nothing else is
configured. The emulator's helpers in ``falassets.sim.control`` know nothing of settings:
the host, CA file and state folder come from here.
"""

from __future__ import annotations

from falassets import settings


def configure() -> None:
    """Point fal at the built-in emulator when there is no key (see settings)."""
    settings.configure_fal_environment()


def ensure_builtin_emulator() -> None:
    """Make sure the built-in emulator answers at settings' address, starting it if not."""
    from falassets.sim.control import ensure_builtin_emulator as ensure

    ensure(settings.default_sim_address(), settings.sim_cert_file(), settings.builtin_sim_dir())


def stop_builtin_emulator() -> bool:
    """SIGTERM the built-in emulator named in its pid file; True when one was running."""
    from falassets.sim.control import stop_builtin_emulator as stop

    return stop(settings.builtin_sim_dir())


def prepare_fal(fal_key: str | None) -> None:
    """Before a render: configure fal's environment and, without a key, make sure the
    built-in emulator answers when it is the one in use."""
    configure()
    if not (fal_key or "").strip() and settings.uses_builtin_emulator():
        ensure_builtin_emulator()
