"""The render store: outputs written and read through one layer, a folder or object storage.

``FALASSETS_RENDERS_URI`` (:func:`falassets.settings.renders_uri`) names the root: a plain
folder (the default, ``$FALASSETS_DATA_DIR/renders``), ``file:///...``, ``s3://bucket/prefix``
(with s3fs installed), ``gs://...`` (gcsfs) or any fsspec URL. A render is stored under a key
``<campaign>/<pass>/<prompt_id>-<sha12>.<ext>`` and recorded by its URI.

Why two paths in one class: a plain folder must cost what it always cost (the engine writes
into the destination folder and renames into place, readers open the path, no copies), while
an object store only has whole-object puts and gets. Local roots keep the fast path; every
other filesystem goes through fsspec's generic calls, where a single put is atomic.

Readers get a *location*: what lineage's ``image_path`` holds, i.e. the local path for plain
folders and the URI otherwise (rows written before this module hold a path). Every reader
opens a render with :func:`open_render` and asks whether one is there with
:func:`render_exists`: one rule, here.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from falassets import settings

ENV = "FALASSETS_RENDERS_URI"
_BLOCK = 1024 * 1024


class RendersUriError(ValueError):
    """``FALASSETS_RENDERS_URI`` cannot be used as configured: an unknown scheme or a
    filesystem package that is not installed. The message names the variable and the fix;
    the command line prints it as one line and exits 2."""

    exit_code = 2


def is_uri(location: str) -> bool:
    """A URL (``s3://``, ``file://``, ``simplecache::s3://``) rather than a plain path."""
    return "://" in location or "::" in location


def uri_of(location: str | os.PathLike[str]) -> str:
    """The URI of a location: itself when it is one, else ``file://`` of the absolute path
    (a relative path is relative to the data directory, as materializations record it)."""
    text = os.fspath(location)
    if is_uri(text):
        return text
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = settings.data_dir() / path
    return path.as_uri()


def local_path(location: str | os.PathLike[str] | None) -> Path | None:
    """The local file behind a location (a plain path or ``file://``), else None: the fast
    path readers take for plain folders, with no copy."""
    if not location:
        return None
    text = os.fspath(location)
    if not is_uri(text):
        return Path(text)
    parts = urlsplit(text)
    if parts.scheme == "file" and "::" not in text and parts.netloc in ("", "localhost"):
        return Path(url2pathname(parts.path))
    return None


def location_of(uri: str | None) -> str | None:
    """What lineage's ``image_path`` holds for a URI: the local path for plain folders (the
    column's meaning before URIs), the URI itself otherwise."""
    if not uri:
        return None
    path = local_path(uri)
    return str(path) if path is not None else uri


def _shown(uri: str) -> str:
    """The URI without user:password (never echo a credential in an error)."""
    parts = urlsplit(uri.split("::")[-1])
    if "@" in parts.netloc:
        return uri.replace(parts.netloc, "***@" + parts.netloc.rsplit("@", 1)[1])
    return uri


def _missing_package(uri: str) -> str | None:
    """The fsspec backend package a URI needs and this Python lacks (s3fs, gcsfs, ...)."""
    from fsspec.registry import known_implementations

    for link in uri.split("::"):
        scheme = link.split("://", 1)[0] if "://" in link else link
        spec = known_implementations.get(scheme)
        if spec is None:
            continue
        package = spec["class"].split(".")[0]
        if importlib.util.find_spec(package) is None:
            return package
    return None


def filesystem(uri: str) -> tuple[Any, str]:
    """fsspec's filesystem and path for a URI, or :class:`RendersUriError` naming the fix."""
    from fsspec.core import url_to_fs

    try:
        return url_to_fs(uri)
    except ImportError as error:
        package = _missing_package(uri) or str(error)
        raise RendersUriError(
            f"{ENV}={_shown(uri)!r} needs the {package} package, which is not installed. "
            f"Fix: pip install {package} (in falassets' environment), or unset {ENV} to keep "
            "renders in $FALASSETS_DATA_DIR/renders."
        ) from None
    except ValueError as error:
        scheme = uri.split("://", 1)[0]
        raise RendersUriError(
            f"{ENV}={_shown(uri)!r}: {scheme!r} is not a storage scheme fsspec knows ({error}). "
            f"Fix: set {ENV} to s3://bucket/prefix, gs://bucket/prefix, file:///abs/folder or "
            "a plain folder, or unset it."
        ) from None


class RenderStore:
    """One root for renders: a local folder (fast path) or any fsspec filesystem."""

    def __init__(self, uri: str) -> None:
        self.configured = uri
        self.fs: Any = None
        self.root = ""
        self.local_root: Path | None = None
        if not is_uri(uri):
            self.local_root = Path(uri).expanduser().resolve()
        else:
            from fsspec.implementations.local import LocalFileSystem

            fs, root = filesystem(uri)
            if isinstance(fs, LocalFileSystem):
                self.local_root = Path(root).resolve()
            else:
                self.fs, self.root = fs, root.rstrip("/")
        self.uri = self.local_root.as_uri() if self.local_root else uri.rstrip("/")

    def __repr__(self) -> str:
        return f"RenderStore({_shown(self.uri)!r})"

    @property
    def is_local(self) -> bool:
        return self.local_root is not None

    # -- keys ----------------------------------------------------------------------------------

    def key_uri(self, key: str) -> str:
        if self.local_root is not None:
            return (self.local_root / key).as_uri()
        return f"{self.uri}/{key}"

    def key_of(self, location: str | os.PathLike[str] | None) -> str | None:
        """The key of a location under this root, or None when it lies elsewhere."""
        if not location:
            return None
        text = os.fspath(location)
        if self.local_root is not None:
            path = local_path(text)
            if path is None:
                return None
            normal = os.path.normpath(path)
            prefix = str(self.local_root) + os.sep
            return normal[len(prefix) :].replace(os.sep, "/") if normal.startswith(prefix) else None
        prefix = self.uri + "/"
        return text[len(prefix) :] if text.startswith(prefix) else None

    # -- writing -------------------------------------------------------------------------------

    def staging_dir(self, prefix: str) -> Path | None:
        """Where to write a file before :meth:`put`: the destination folder itself for a local
        root (so placing it is a rename on one filesystem), the system temp folder otherwise."""
        if self.local_root is None:
            return None
        folder = self.local_root / prefix
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def put(self, tmp: Path, key: str) -> str:
        """Move a verified local file to ``key`` and return its URI. Local: a rename (atomic,
        as before). Object stores: one put (atomic there), then the temp file is removed."""
        if self.local_root is not None:
            target = self.local_root / key
            if tmp.parent != target.parent:  # staged elsewhere than staging_dir(): make room
                target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
            return target.as_uri()
        path = f"{self.root}/{key}"
        try:
            self.fs.put_file(str(tmp), path)
        except FileNotFoundError:  # a folder-backed fsspec filesystem wants its parents
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            self.fs.put_file(str(tmp), path)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        return self.key_uri(key)

    # -- reading -------------------------------------------------------------------------------

    def _remote(self, uri: str) -> tuple[Any, str]:
        """Filesystem and path of a URI: this store's for its own keys, fsspec's otherwise
        (a render recorded under an earlier ``FALASSETS_RENDERS_URI``)."""
        prefix = self.uri + "/"
        if self.fs is not None and uri.startswith(prefix):
            return self.fs, f"{self.root}/{uri[len(prefix) :]}"
        try:
            return filesystem(uri)
        except RendersUriError as error:
            raise OSError(str(error)) from None

    def open(self, location: str | os.PathLike[str]) -> IO[bytes]:
        """A binary file object (seekable: Pillow can open it). Raises OSError."""
        path = local_path(location)
        if path is not None:
            return path.open("rb")
        fs, remote = self._remote(os.fspath(location))
        return fs.open(remote, "rb")

    def exists(self, location: str | os.PathLike[str] | None) -> bool:
        if not location:
            return False
        path = local_path(location)
        if path is not None:
            return path.is_file()
        try:
            fs, remote = self._remote(os.fspath(location))
            return bool(fs.isfile(remote))
        except OSError:
            return False

    def sha256(self, location: str | os.PathLike[str]) -> str:
        """sha256 of the stored bytes. Raises OSError when they cannot be read."""
        digest = hashlib.sha256()
        with self.open(location) as handle:
            for block in iter(lambda: handle.read(_BLOCK), b""):
                digest.update(block)
        return digest.hexdigest()

    def folder(self, prefix: str) -> RenderFolder:
        return RenderFolder(self, prefix.strip("/"))


@dataclass(frozen=True)
class RenderFolder:
    """A prefix of a store (``<campaign>/<pass>``): where one pass's downloads go."""

    store: RenderStore
    prefix: str

    @classmethod
    def local(cls, directory: Path) -> RenderFolder:
        """A plain folder used directly (tests, tools), outside the configured store."""
        return RenderStore(str(directory)).folder("")

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def staging_dir(self, sub: str = "") -> Path | None:
        return self.store.staging_dir(self.key(sub) if sub else self.prefix)

    def put(self, tmp: Path, name: str) -> str:
        return self.store.put(tmp, self.key(name))

    def exists(self, name: str) -> bool:
        return self.store.exists(self.store.key_uri(self.key(name)))


@functools.lru_cache(maxsize=8)
def _store_for(uri: str) -> RenderStore:
    return RenderStore(uri)


def renders_store() -> RenderStore:
    """The store ``FALASSETS_RENDERS_URI`` names (built once per value). Raises
    :class:`RendersUriError` for an unknown scheme or a missing backend package."""
    return _store_for(settings.renders_uri())


def check_renders_uri() -> None:
    """Fail at start, not at the first download: the command line calls this first."""
    renders_store()


def open_render(location: str | os.PathLike[str]) -> IO[bytes]:
    """Open a recorded render (lineage's ``image_path``/``image_uri``, a thumbnail) for
    reading, wherever it is stored. Raises OSError when it cannot be read."""
    return renders_store().open(location)


def render_exists(location: str | os.PathLike[str] | None) -> bool:
    """Whether a recorded render is still there."""
    return renders_store().exists(location)


def render_sha256(location: str | os.PathLike[str]) -> str:
    """sha256 of a recorded render's stored bytes. Raises OSError when it cannot be read."""
    return renders_store().sha256(location)


def make_staging_file(folder: Path | None, suffix: str = "") -> tuple[int, Path]:
    """A new temp file (fd, path) for :meth:`RenderStore.put`, named so a crash leaves a
    recognisable ``.part-`` file and never a half-written render under a final name."""
    fd, name = tempfile.mkstemp(prefix=".part-", suffix=suffix, dir=folder)
    return fd, Path(name)
