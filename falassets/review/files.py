"""Serve renders and the data directory's images, and nothing else.

The page shows thumbnails and full renders by URL. ``/files/renders/<key>`` is a key of the
render store (:mod:`falassets.storage.renders`: ``$FALASSETS_DATA_DIR/renders`` by default,
or wherever ``FALASSETS_RENDERS_URI`` points, object storage included), read through that
store; any other ``/files/<path>`` is a path relative to the data directory. Every request is
checked and refused unless it names an image type from the allow-list that really lies under
its root (symlinks resolved), so ``../``, ``%2e%2e``, absolute paths and a symlink pointing
out all fail, and journals, Dagster state or keys never leave.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import quote

from falassets.storage.renders import local_path, open_render, renders_store

#: Suffix -> content type. Only images: never a journal, a database or a certificate.
IMAGE_TYPES: dict[str, str] = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
}

FILES_PREFIX = "/files/"
#: ``/files/renders/<key>``: a key of the render store (also the folder's name in the data
#: directory by default, so the URLs are the ones the page always used).
RENDERS = "renders"
_CHUNK = 256 * 1024


class Refused(Exception):
    """A file request that must not be served; ``status`` is the HTTP answer (403 or 404)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class ServedImage:
    """An image the page may serve: a local file (``path``) or a location in the store."""

    content_type: str
    path: Path | None
    location: str

    def open(self) -> IO[bytes]:
        return open_render(self.location)

    def chunks(self) -> Iterator[bytes]:
        """The bytes in blocks, for a streamed response from object storage."""
        with self.open() as handle:
            while block := handle.read(_CHUNK):
                yield block


def resolve_image(root: Path, relative: str) -> ServedImage:
    """The image ``relative`` names (under the render store or ``root``), or :class:`Refused`.

    ``relative`` is the already percent-decoded URL path after ``/files/``. ``root`` must be
    resolved already (the app resolves it once at start).
    """
    if not relative or "\x00" in relative or relative.startswith(("/", "\\")):
        raise Refused(403, "absolute or empty path")
    if ".." in relative.replace("\\", "/").split("/"):
        raise Refused(403, "path escapes the data directory")
    head, _, key = relative.partition("/")
    if head == RENDERS:
        return _from_store(key)
    return _local(root, relative)


def _local(root: Path, relative: str) -> ServedImage:
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
    return ServedImage(content_type, real, str(real))


def _from_store(key: str) -> ServedImage:
    store = renders_store()
    if store.local_root is not None:
        return _local(store.local_root, key)
    parts = key.split("/")
    if "\\" in key or any(part in ("", ".") for part in parts):
        raise Refused(404, "no such file")
    content_type = IMAGE_TYPES.get(os.path.splitext(parts[-1])[1].lower())
    if content_type is None:
        raise Refused(404, "not an image")
    uri = store.key_uri(key)
    if not store.exists(uri):
        raise Refused(404, "no such file")
    return ServedImage(content_type, None, uri)


def file_url(root: Path, location: str | os.PathLike[str] | None) -> str | None:
    """The page's URL for a render lineage recorded (a path or a URI): under the render store
    by key, else under ``root`` by path; None when it is in neither (the page then shows no
    image, and the file route would refuse it anyway)."""
    if not location:
        return None
    key = renders_store().key_of(location)
    if key is not None:
        return f"{FILES_PREFIX}{RENDERS}/{quote(key)}"
    path = local_path(location)
    if path is None:
        return None
    normal = os.path.normpath(path)
    prefix = os.fspath(root) + os.sep
    if not normal.startswith(prefix):
        return None
    return FILES_PREFIX + quote(normal[len(prefix) :].replace(os.sep, "/"))
