"""Serve render files from the data directory, and nothing else.

The page shows thumbnails and full renders by a path relative to the data directory. Every
request is resolved (symlinks included) and refused unless the real file lies under the real
data directory and has an image type from the allow-list, so ``../``, ``%2e%2e``, absolute
paths and a symlink pointing out all fail, and journals, Dagster state or keys never leave.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

#: Suffix -> content type. Only images: never a journal, a database or a certificate.
IMAGE_TYPES: dict[str, str] = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
}

FILES_PREFIX = "/files/"


class Refused(Exception):
    """A file request that must not be served; ``status`` is the HTTP answer (403 or 404)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def resolve_image(root: Path, relative: str) -> tuple[Path, str]:
    """The real path and content type of ``relative`` under ``root``, or :class:`Refused`.

    ``relative`` is the already percent-decoded URL path after ``/files/``. ``root`` must be
    resolved already (the app resolves it once at start).
    """
    if not relative or "\x00" in relative or relative.startswith(("/", "\\")):
        raise Refused(403, "absolute or empty path")
    if ".." in relative.replace("\\", "/").split("/"):
        raise Refused(403, "path escapes the data directory")
    try:
        real = (root / relative).resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        raise Refused(404, "no such file") from None
    except (OSError, RuntimeError):  # symlink loop, name too long, ...
        raise Refused(404, "unreadable path") from None
    if not real.is_relative_to(root):
        raise Refused(403, "path escapes the data directory")
    if not real.is_file():
        raise Refused(404, "not a file")  # directories are never listed
    content_type = IMAGE_TYPES.get(real.suffix.lower())
    if content_type is None:
        raise Refused(404, "not an image")
    return real, content_type


def file_url(root: Path, path: str | os.PathLike[str] | None) -> str | None:
    """The page's URL for a file lineage recorded (absolute path), or None when it is not
    under ``root`` (the file route would refuse it anyway; the page then shows no image)."""
    if not path:
        return None
    normal = os.path.normpath(os.fspath(path))
    prefix = os.fspath(root) + os.sep
    if not normal.startswith(prefix):
        return None
    return FILES_PREFIX + quote(normal[len(prefix) :].replace(os.sep, "/"))
