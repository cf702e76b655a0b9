"""Fetch a rendered image from fal and keep it only if it really is the image we asked for.

fal's output URLs are short-lived, so the engine downloads as soon as a result is ready. A
download is streamed to a temporary file (bounded memory), capped in size, allowed only from
the endpoint's own host or fal's CDN, checked for content type and by a full Pillow decode
(and for the requested dimensions), then placed in the render store
(:mod:`falassets.storage.renders`): renamed into place in a plain folder, one put in object
storage, so a crash never leaves a half-written image under a final name.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from PIL import Image

from falassets.storage.renders import RenderFolder, local_path, location_of, make_staging_file

MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
#: Decode checks and thumbnails run one at a time off the event loop: a few ms each, far
#: faster than fal delivers images, and one thread keeps one decoded image (and one malloc
#: arena) in memory instead of one per default-executor thread.
_IMAGE_CHECKS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="falassets-image-check")
THUMBNAIL_PX = 256
FAL_CDN_SUFFIXES = (".fal.media", ".fal.run", ".fal.ai")
FAL_CDN_HOSTS = ("fal.media", "fal.run", "fal.ai")
_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif"}


class DownloadError(Exception):
    """An output that could not be fetched or is not a valid image (``kind`` says which)."""

    def __init__(self, kind: str, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.transient = transient


@dataclass(frozen=True)
class StoredImage:
    """A verified output in the store. ``path``/``thumbnail_path``: the local files when the
    store is a plain folder, else None; ``uri``/``thumbnail_uri``: where the store has them."""

    path: Path | None
    thumbnail_path: Path | None
    sha256: str
    width: int
    height: int
    content_type: str
    size_bytes: int
    uri: str
    thumbnail_uri: str

    def row_fields(self) -> dict[str, object]:
        """The lineage columns of a stored output (``image_path``: the local path for plain
        folders, the URI otherwise, as before URIs; ``image_uri`` always)."""
        return {
            "image_path": location_of(self.uri),
            "image_uri": self.uri,
            "thumbnail_path": location_of(self.thumbnail_uri),
            "sha256": self.sha256,
            "width": self.width,
            "height": self.height,
        }

    def image_entry(self, variant: int, output_url: str | None) -> dict[str, object]:
        """This output as entry ``variant`` of its request's ``images`` list (the columns of
        ``lineage.schema.IMAGE_COLUMNS``; read back by ``lineage.variants``)."""
        return {"variant": variant, **self.row_fields(), "output_url": output_url}


def allowed_host(url: str, endpoint_host: str) -> bool:
    """Only fal's CDN or the host that served the request (the emulator, a proxy) over https."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        return False
    host = parts.hostname.lower()
    netloc = parts.netloc.lower().rsplit("@", 1)[-1]
    if netloc == endpoint_host.lower() or host == endpoint_host.lower():
        return True
    return host in FAL_CDN_HOSTS or host.endswith(FAL_CDN_SUFFIXES)


def output_stem(prompt_id: str, sha256: str) -> str:
    return f"{prompt_id}-{sha256[:12]}"


async def download_image(
    client: httpx.AsyncClient,
    url: str,
    dest: RenderFolder | Path,
    prompt_id: str,
    *,
    endpoint_host: str,
    expected_size: tuple[int, int] | None = None,
    max_bytes: int = MAX_DOWNLOAD_BYTES,
    timeout_s: float = 120.0,
) -> StoredImage:
    """Download ``url`` into ``dest/<prompt_id>-<sha12>.<ext>`` with a thumbnail under
    ``dest/thumbs/`` (``dest``: a folder of the render store, or a plain directory). Raises
    :class:`DownloadError`; nothing is left behind on failure."""
    if not allowed_host(url, endpoint_host):
        raise DownloadError(
            "output_host_not_allowed",
            f"refusing to download {urlsplit(url).netloc or url[:60]!r}: outputs are fetched "
            f"only over https from fal's CDN or {endpoint_host}",
        )
    folder = dest if isinstance(dest, RenderFolder) else RenderFolder.local(dest)
    fd, tmp = make_staging_file(folder.staging_dir())
    try:
        digest = hashlib.sha256()
        size = 0
        try:
            async with client.stream("GET", url, timeout=timeout_s) as response:
                if response.status_code != 200:
                    transient = response.status_code >= 500 or response.status_code == 429
                    raise DownloadError(
                        "output_http_error",
                        f"output download answered HTTP {response.status_code}",
                        transient=transient,
                    )
                content_type = response.headers.get("content-type", "").split(";")[0].strip()
                if not content_type.startswith("image/"):
                    raise DownloadError(
                        "output_not_image", f"output has content type {content_type!r}"
                    )
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise DownloadError(
                        "output_too_large", f"output is {declared} bytes, cap is {max_bytes}"
                    )
                async for chunk in response.aiter_bytes(256 * 1024):
                    size += len(chunk)
                    if size > max_bytes:
                        raise DownloadError(
                            "output_too_large", f"output exceeds the {max_bytes}-byte cap"
                        )
                    digest.update(chunk)
                    os.write(fd, chunk)
        except (httpx.TransportError, httpx.TimeoutException) as error:
            message = f"output download failed: {type(error).__name__}"
            raise DownloadError("output_transport", message, transient=True) from error
        os.close(fd)
        fd = -1
        sha = digest.hexdigest()
        return await asyncio.get_running_loop().run_in_executor(
            _IMAGE_CHECKS,
            _check_and_place,
            *(tmp, folder, prompt_id, sha, content_type, size, expected_size),
        )
    finally:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _check_and_place(
    tmp: Path,
    folder: RenderFolder,
    prompt_id: str,
    sha: str,
    content_type: str,
    size: int,
    expected_size: tuple[int, int] | None,
) -> StoredImage:
    """Decode fully (a truncated or corrupt file fails here), then place it in the store."""
    try:
        with Image.open(tmp) as image:
            image.load()
            fmt = image.format or ""
            width, height = image.size
            thumb = image.copy()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        message = f"output is not a valid image: {error}"
        raise DownloadError("output_not_decodable", message) from error
    if expected_size is not None and (width, height) != tuple(expected_size):
        raise DownloadError(
            "output_wrong_size",
            f"output is {width}x{height}, the request asked for "
            f"{expected_size[0]}x{expected_size[1]}",
        )
    ext = _EXTENSIONS.get(fmt, fmt.lower() or "bin")
    stem = output_stem(prompt_id, sha)
    thumb_name = f"thumbs/{stem}.jpg"
    if not folder.exists(thumb_name):
        # Box-reduce by the integer factor first (reducing_gap=1): ~10x less CPU than a full
        # bicubic resample of the decoded image, alike at thumbnail size; every variant of
        # every draft pays it on the engine's one image thread.
        thumb.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX), reducing_gap=1.0)
        if thumb.mode not in ("RGB", "L"):
            background = Image.new("RGB", thumb.size, "white")
            rgba = thumb.convert("RGBA")
            background.paste(rgba, mask=rgba.getchannel("A"))
            thumb = background
        fd, tmp_thumb = make_staging_file(folder.staging_dir("thumbs"), ".jpg")
        try:
            with os.fdopen(fd, "wb") as handle:
                thumb.save(handle, "JPEG", quality=80)
            folder.put(tmp_thumb, thumb_name)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp_thumb.unlink()
            raise
    thumb_uri = folder.store.key_uri(folder.key(thumb_name))
    uri = folder.put(tmp, f"{stem}.{ext}")
    return StoredImage(
        local_path(uri),
        local_path(thumb_uri),
        sha,
        width,
        height,
        content_type,
        size,
        uri,
        thumb_uri,
    )


def file_sha256(path: Path) -> str | None:
    """sha256 of a file on disk, or None when it is gone (used to trust a reused record)."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1024 * 1024), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()
