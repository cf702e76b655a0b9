"""Reading a POST body: bounded while it streams, and parsed strictly.

The review page's bodies are a few hundred bytes of JSON (prompt ids, a decision). Anything
else is refused with a 4xx that says what was wrong: a body past the limit as soon as it
passes it (the rest is never read, so a huge upload costs no memory), and bad UTF-8, nesting
too deep for the parser, numbers too long to convert, NaN/Infinity or a non-object with 400,
never a 500.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request

MAX_BODY_BYTES = 1 << 20
MAX_NUMBER_DIGITS = 32  # far beyond any count or price; Python refuses to convert > 4,300

TOO_LARGE = (
    f"request body too large (the limit is {MAX_BODY_BYTES // 1024} KiB; the page sends a few "
    "hundred bytes)"
)


class _BadNumber(ValueError):
    pass


async def read_json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object ({} when empty); HTTPException 413 or 400 otherwise."""
    return parse_json_object(await read_bounded(request))


async def read_bounded(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, refused (413) by its declared length or as soon as the stream passes ``limit``."""
    declared = request.headers.get("content-length", "").strip()
    if declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        raise _too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large() -> HTTPException:
    """413, closing the connection: keeping it alive would mean reading (and discarding) the
    rest of the body before the next request could be parsed."""
    return HTTPException(413, TOO_LARGE, headers={"connection": "close"})


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Strict JSON object from ``body``; HTTPException 400 naming the problem otherwise."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(f"the request body is not UTF-8 (byte {exc.start})") from None
    if not text.strip():
        return {}
    try:
        data = json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except RecursionError:
        raise _bad("the request body's JSON is nested too deeply") from None
    except _BadNumber as exc:
        raise _bad(str(exc)) from None
    except json.JSONDecodeError as exc:
        raise _bad(f"the request body is not JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(data, dict):
        raise _bad(f"the request body must be a JSON object, not a {_kind(data)}")
    return data


def _bad(problem: str) -> HTTPException:
    return HTTPException(400, f"{problem}. Fix: send a JSON object such as the page sends")


def _int(text: str) -> int:
    _check_digits(text)
    return int(text)


def _float(text: str) -> float:
    _check_digits(text)
    return float(text)


def _check_digits(text: str) -> None:
    if len(text) > MAX_NUMBER_DIGITS:
        raise _BadNumber(f"the request body has a {len(text)}-character number")


def _constant(name: str) -> Any:
    raise _BadNumber(f"the request body has {name}, which is not JSON")


def _kind(value: Any) -> str:
    return {list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )
