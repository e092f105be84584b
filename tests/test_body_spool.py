"""The milter's body spool: chunks kept as they came in memory, a temporary file past the
limit (mta/body_spool.py)."""

from __future__ import annotations

import tempfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpapi_milter.mta.body_spool import BodySpool


@given(st.lists(st.binary(max_size=40), max_size=12), st.integers(0, 200))
def test_it_gives_back_what_was_written(chunks: list[bytes], limit: int) -> None:
    spool = BodySpool(limit)
    for chunk in chunks:
        spool.write(chunk)
    body = b"".join(chunks)
    assert spool.size == len(body)
    assert spool.on_disk == (len(body) > limit)
    assert spool.read() == body
    assert spool.read() == body  # again: split mode reads the body a second time
    spool.close()


def test_one_chunk_is_handed_back_without_a_copy() -> None:
    chunk = b"x" * 65535  # libmilter's largest body packet
    spool = BodySpool(1024 * 1024)
    spool.write(chunk)
    assert spool.read() is chunk


def test_past_the_limit_the_body_goes_to_a_file_and_the_chunks_are_let_go() -> None:
    spool = BodySpool(10)
    spool.write(b"0123456789")
    assert not spool.on_disk  # at the limit, not past it
    spool.write(b"a")
    assert spool.on_disk and spool._chunks == []
    spool.write(b"bc")
    assert spool.read() == b"0123456789abc" and spool.size == 13
    spool.close()
    assert not spool.on_disk


def test_a_file_that_cannot_be_made_raises_from_the_write(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "gone"))
    spool = BodySpool(4)
    spool.write(b"1234")
    with pytest.raises(FileNotFoundError):
        spool.write(b"5")
