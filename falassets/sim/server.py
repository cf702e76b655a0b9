"""``falassets sim``: run the fal queue emulator over HTTPS on 127.0.0.1.

It prints the environment a client needs as shell ``export`` lines on stdout (flushed, so
``eval "$(falassets sim ... | head -3)"`` or a parent process can read them), then logs to
stderr. Keys are never logged.
"""

from __future__ import annotations

import errno
import logging
import os
import shlex
import socket
import sys
from pathlib import Path

import uvicorn

from falassets.sim.app import SimApp
from falassets.sim.certs import ensure_certificates
from falassets.sim.config import build_parser, config_from_args

log = logging.getLogger("falassets.sim")


def bind(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:port (0 = any free port), ready for uvicorn."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def export_lines(host: str, ca_file: Path) -> list[str]:
    return [
        f"export FAL_QUEUE_RUN_HOST={shlex.quote(host)}",
        f"export SSL_CERT_FILE={shlex.quote(str(ca_file))}",
        "export NO_PROXY=127.0.0.1,localhost",
    ]


def main(argv: list[str], default_cert_dir: Path | None = None) -> int:
    """Serve until stopped. ``default_cert_dir`` is where certificates go without
    ``--cert-dir`` (`falassets sim` passes the built-in emulator's folder)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.cert_dir and default_cert_dir is None:
        parser.error("--cert-dir is required (`falassets sim` supplies the built-in one)")
    cert_dir = Path(args.cert_dir).expanduser() if args.cert_dir else default_cert_dir
    try:
        certs = ensure_certificates(cert_dir.resolve())
    except OSError as error:
        print(f"falassets sim: cannot write certificates to {cert_dir}: {error}", file=sys.stderr)
        return 2
    try:
        sock = bind(args.port)
    except OSError as error:
        reason = "is already in use" if error.errno == errno.EADDRINUSE else f"failed: {error}"
        print(
            f"falassets sim: port {args.port} on 127.0.0.1 {reason}; pick another with --port "
            "(or --port 0 for any free port)",
            file=sys.stderr,
        )
        return 2
    host = f"127.0.0.1:{sock.getsockname()[1]}"
    sim = SimApp(
        config,
        ledger_file=Path(args.ledger_file).expanduser() if args.ledger_file else None,
        state_file=Path(args.state_file).expanduser() if args.state_file else None,
    )
    print("\n".join(export_lines(host, certs.ca)), flush=True)
    log.info(
        "fal queue emulator on https://%s (pid %d, mode %s, concurrency %d, time scale %g)",
        host,
        os.getpid(),
        config.mode,
        config.concurrency,
        config.time_scale,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            sim.app,
            ssl_certfile=str(certs.cert),
            ssl_keyfile=str(certs.key),
            loop="uvloop",
            http="httptools",
            lifespan="on",
            access_log=False,
            log_config=None,
            log_level=args.log_level,
            timeout_keep_alive=75,
            timeout_graceful_shutdown=2,
            backlog=2048,
        )
    )
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
