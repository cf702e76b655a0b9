"""The `falassets` command. INTERFACE STUB: owned by the CLI work."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "sim":
        from falassets.sim.server import main as sim_main

        return sim_main(argv[1:])
    print("falassets: commands arrive as the pipeline lands", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
