"""Replace a file in one step, from any host that shares its folder.

Readers never see half a file: the new content is written beside the target and renamed over
it. The temporary name is unique per call (``mkstemp``), not per pid: on a volume shared by
several hosts (docs/deploy.md) two hosts' processes can have the same pid.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(temporary)`` to fill a new file beside ``path``, then rename it over
    ``path``; on any error the temporary file goes and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise


def write_text_atomically(path: Path, text: str) -> None:
    replace_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))
