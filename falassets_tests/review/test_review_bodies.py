"""What the review server does with bodies and journal lines it did not expect: a body too
large is refused while it streams, a malformed one gets a 400 that says why, and an odd
journal line is skipped instead of breaking the page.
"""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import pytest

from falassets import settings
from falassets.lineage import decisions
from falassets.lineage.journal import Journal
from falassets.review.body import MAX_BODY_BYTES
from falassets.review.security import TOKEN_HEADER
from falassets_tests.review.test_review_support import ReviewServer, seed_drafts

DECISIONS_PATH = "/api/campaigns/spring/decisions"


@pytest.fixture
def server(data_dir: Path):
    seed_drafts(data_dir, "spring", {"p1": "a red bicycle", "p2": "a blue mug"})
    with ReviewServer(budget_usd=None) as running:
        yield running


def post_head(server: ReviewServer, extra: str) -> bytes:
    return (
        f"POST {DECISIONS_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Origin: {server.origin}\r\n{TOKEN_HEADER}: {server.token}\r\n"
        f"Content-Type: application/json\r\n{extra}\r\n"
    ).encode()


def answer_and_close(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection; a timeout here means it is
    still reading the body (or keeping the connection open to read the rest of it)."""
    sock.settimeout(20)
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_a_body_past_the_limit_is_refused_before_the_rest_is_sent(server: ReviewServer) -> None:
    """150 MB of chunked body used to be read whole (99 MB -> 285 MB RSS) before the size
    check. Here the body never ends: only an answer given while it streams arrives at all,
    and the server then closes the connection rather than read the rest."""
    piece = b"x" * 65536
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(post_head(server, "Transfer-Encoding: chunked\r\n"))
        for _ in range(MAX_BODY_BYTES // len(piece)):
            sock.sendall(chunk)
        # One byte over, sent last, so the server has read all we sent when it answers
        # (closing on unread bytes would reset the connection and lose the answer).
        sock.sendall(b"1\r\nx\r\n")
        answer = answer_and_close(sock)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"connection: close" in answer.lower()
    assert decisions.current_decisions("spring") == {}


def test_a_declared_length_past_the_limit_is_refused_at_once(server: ReviewServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(post_head(server, f"Content-Length: {150 * 1024 * 1024}\r\n"))
        assert answer_and_close(sock).startswith(b"HTTP/1.1 413")


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"prompt_ids": ["p1"], "n": ' + b"7" * 5000 + b"}", "5000-character number"),
        (b'{"prompt_ids": ["p1"], "n": 1.' + b"5" * 400 + b"}", "number"),
        (b'{"prompt_ids": ["p1"], "decision": "pick\xff"}', "not UTF-8"),
        (b'{"prompt_ids": ["p1"], "n": NaN}', "NaN"),
        (b'{"prompt_ids": ["p1"], "decision": "pick"', "not JSON"),
        (b'["p1"]', "JSON object, not a list"),
        (b'"pick"', "JSON object, not a string"),
        (b"null", "JSON object, not a null"),
    ],
    ids=["deep", "long-int", "long-float", "bad-utf8", "nan", "truncated", "list", "str", "null"],
)
def test_a_malformed_body_gets_400_saying_why(
    server: ReviewServer, body: bytes, named: str
) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(post_head(server, f"Content-Length: {len(body)}\r\n") + body)
        sock.settimeout(20)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
            if b"\r\n\r\n" in reply and reply.rstrip().endswith(b"}"):
                break
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), reply[:300]
    assert named in json.loads(payload)["error"]
    assert decisions.current_decisions("spring") == {}


@pytest.mark.parametrize(
    "odd",
    ["Bad Name!", "UPPER", "a-b", 5, ["x"], {"n": 1}, "z" * 300],
    ids=["punctuation", "upper", "dash", "number", "list", "object", "too-long"],
)
def test_an_odd_campaign_in_the_journal_is_skipped_and_logged(
    server: ReviewServer, odd: object, caplog: pytest.LogCaptureFixture
) -> None:
    with Journal(settings.journal_dir(), "requests") as journal:
        journal.append(
            {
                "request_id": "req-odd",
                "partition_key": "odd-p1",
                "campaign": odd,
                "prompt_id": "p1",
                "pass": "draft",
                "status": "completed",
            }
        )
    with caplog.at_level(logging.WARNING, logger="falassets.review.board"):
        listed = server.request("GET", "/api/campaigns")
    assert listed.status == 200, listed.body
    assert [c["name"] for c in listed.json()["campaigns"]] == ["spring"]
    assert repr(odd)[:40] in caplog.text


def test_odd_decision_lines_are_skipped(
    server: ReviewServer, caplog: pytest.LogCaptureFixture
) -> None:
    decisions.record_decisions("spring", ["p2"], "pick", source="review")
    odd_lines = [
        [1],
        "pick",
        {"campaign": "spring", "prompt_id": ["p1"], "decision": "pick"},
        {"campaign": "spring", "prompt_id": "p1", "decision": "pick", "recorded_at": 5},
        {"campaign": "Spring!", "prompt_id": "p1", "decision": "pick"},
    ]
    odd_file = settings.journal_dir() / "decisions-odd.jsonl"
    odd_file.write_text("".join(json.dumps(line) + "\n" for line in odd_lines))
    with caplog.at_level(logging.WARNING, logger="falassets.lineage.decisions"):
        board = server.request("GET", "/api/campaigns/spring")
        assert decisions.winners("spring") == ["p2"]
    assert board.status == 200
    assert board.json()["counts"]["picked"] == 1
    assert "not a decision" in caplog.text


def test_odd_request_lines_are_skipped(server: ReviewServer) -> None:
    odd_lines = [
        [1],
        "x",
        {"request_id": ["r"], "partition_key": "spring-p1", "pass": "draft"},
        {"request_id": "req-a", "partition_key": 7, "pass": "draft", "campaign": "spring"},
        {"request_id": "req-b", "partition_key": "spring-p1", "pass": ["draft"]},
    ]
    odd_file = settings.journal_dir() / "requests-odd.jsonl"
    odd_file.write_text("".join(json.dumps(line) + "\n" for line in odd_lines))

    listed = server.request("GET", "/api/campaigns")
    board = server.request("GET", "/api/campaigns/spring")

    assert listed.status == 200, listed.body
    assert [c["name"] for c in listed.json()["campaigns"]] == ["spring"]
    assert board.status == 200, board.body
