"""The suppression list's admin API over real HTTP, on SQLite and PostgreSQL (SPEC 14)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from .harness.smtpapi import RunningTracker
from .test_store import store_url  # noqa: F401 (fixture: SQLite and PostgreSQL)
from .test_suppression_cli import suppression

LIST = "/api/v1/suppression-list"


@pytest.fixture()
def tracker(tmp_path: Path, store_url: str) -> Iterator[RunningTracker]:  # noqa: F811
    with RunningTracker(tmp_path, events={"store": store_url}) as running:
        yield running


def call(
    tracker: RunningTracker,
    method: str,
    path: str,
    body: object = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", tracker.admin_port, timeout=30)
    try:
        data = None if body is None else json.dumps(body).encode()
        sent = {**tracker.admin_headers, "Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=data, headers=sent)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_put_get_delete(tracker: RunningTracker) -> None:
    path = f"{LIST}/{quote('Jane@Example.org')}"
    assert call(tracker, "GET", path)[0] == 404
    status, body = call(tracker, "PUT", path, {"description": "asked by phone"})
    assert status == 200, body
    [entry] = body["results"]
    assert entry["recipient"] == "jane@example.org" and entry["type"] == "non_transactional"
    assert entry["source"] == "manual" and entry["description"] == "asked by phone"
    assert entry["created"].endswith("+00:00") and entry["non_transactional"] is True
    status, body = call(tracker, "PUT", path, {"type": "transactional"})
    assert status == 200 and body["results"][0]["type"] == "transactional"
    status, body = call(tracker, "GET", f"{LIST}/jane@example.org")
    assert status == 200 and [e["type"] for e in body["results"]] == [
        "non_transactional",
        "transactional",
    ]
    assert call(tracker, "DELETE", path + "?type=transactional") == (200, {"deleted": 1})
    assert call(tracker, "DELETE", path, {"type": "non_transactional"}) == (200, {"deleted": 1})
    assert call(tracker, "DELETE", path)[0] == 404
    assert call(tracker, "GET", path)[0] == 404


def test_list_searches_filters_and_pages(tracker: RunningTracker) -> None:
    for n in range(5):
        assert call(tracker, "PUT", f"{LIST}/user{n}@example.org", {})[0] == 200
    call(tracker, "PUT", f"{LIST}/vip@example.com", {"description": "Board member"})
    # an entry made by the CLI is the same list
    assert suppression(tracker.config_path, "add", "cli@example.net").returncode == 0
    status, body = call(tracker, "GET", f"{LIST}?search=board")
    assert status == 200 and [e["recipient"] for e in body["results"]] == ["vip@example.com"]
    assert call(tracker, "GET", f"{LIST}?source=bounce")[1]["results"] == []
    seen, after = [], ""
    while True:
        status, body = call(
            tracker, "GET", f"{LIST}?limit=3" + (f"&after={quote(after)}" if after else "")
        )
        assert status == 200, body
        seen += [e["recipient"] for e in body["results"]]
        if body["next_after"] is None:
            break
        after = body["next_after"]
    assert seen == sorted(seen) and len(seen) == 7 and "cli@example.net" in seen


@pytest.mark.parametrize(
    ("method", "path", "body", "error"),
    [
        ("PUT", f"{LIST}/not-an-address", {}, "is not an address"),
        ("PUT", f"{LIST}/a@example.org", {"type": "marketing"}, "type 'marketing'"),
        ("PUT", f"{LIST}/a@example.org", ["x"], "must be a JSON object"),
        ("PUT", f"{LIST}/a@example.org", {"description": 5}, "description must be a string"),
        ("GET", f"{LIST}?limit=0", None, "limit 0 is not between"),
        ("GET", f"{LIST}?source=spam", None, "source 'spam'"),
    ],
)
def test_bad_requests_are_400(
    tracker: RunningTracker, method: str, path: str, body: object, error: str
) -> None:
    status, answer = call(tracker, method, path, body)
    assert status == 400 and error in answer["error"]


def test_token_and_host_are_required(tracker: RunningTracker) -> None:
    status, _ = call(tracker, "PUT", f"{LIST}/a@example.org", {}, {"Authorization": "Bearer x"})
    assert status == 401
    status, _ = call(tracker, "GET", LIST, headers={"Host": "evil.example"})
    assert status == 421
    assert call(tracker, "GET", LIST)[1]["results"] == []
