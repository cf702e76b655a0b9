"""The emulator's TLS identity: a local CA (``ca.pem``, what SSL_CERT_FILE points at) and a
leaf certificate for 127.0.0.1 and localhost signed by it.

Existing files are reused while valid, so an emulator restarted on the same port stays
trusted by clients that loaded the CA at start (httpx reads SSL_CERT_FILE once per client).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509

CA_FILE = "ca.pem"
CERT_FILE = "server.pem"
KEY_FILE = "server.key"
#: Regenerate when the leaf expires within this window.
MIN_REMAINING = dt.timedelta(days=7)


@dataclass(frozen=True)
class CertFiles:
    ca: Path
    cert: Path
    key: Path


def _leaf_is_usable(files: CertFiles) -> bool:
    """The leaf names 127.0.0.1 and localhost, is valid for a while, chains to ca.pem and
    matches its key (checked by loading both into an SSL context)."""
    try:
        ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
        leaf = x509.load_pem_x509_certificate(files.cert.read_bytes())
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if ipaddress.ip_address("127.0.0.1") not in names.get_values_for_type(x509.IPAddress):
            return False
        if "localhost" not in names.get_values_for_type(x509.DNSName):
            return False
        if leaf.issuer != ca.subject:
            return False
        now = dt.datetime.now(dt.UTC)
        if leaf.not_valid_after_utc - now < MIN_REMAINING or leaf.not_valid_before_utc > now:
            return False
        leaf.verify_directly_issued_by(ca)
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(files.cert, files.key)
    except (OSError, ValueError, TypeError, x509.ExtensionNotFound, ssl.SSLError):
        return False
    except Exception:  # cryptography's InvalidSignature and friends
        return False
    return True


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def ensure_certificates(cert_dir: Path) -> CertFiles:
    """Reuse the CA and leaf in ``cert_dir`` when valid, else make new ones there."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    files = CertFiles(cert_dir / CA_FILE, cert_dir / CERT_FILE, cert_dir / KEY_FILE)
    # Emulators starting at once in one directory must agree on one CA.
    with open(cert_dir / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _leaf_is_usable(files):
            _generate(files)
    return files


def _generate(files: CertFiles) -> None:
    ca = trustme.CA(organization_name="falassets emulator")
    leaf = ca.issue_cert("127.0.0.1", "localhost", "::1")
    # Key and chain first, CA last: a reader that sees the new CA also sees its leaf.
    _write(files.key, leaf.private_key_pem.bytes(), 0o600)
    _write(files.cert, b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    _write(files.ca, ca.cert_pem.bytes())
