"""``[milter] workers``: several processes on one socket, supervised as one group."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import smtplib
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from . import corpus
from .harness.capture import CaptureServer
from .harness.ports import deadline_in, wait_for_port
from .harness.smtpapi import RunningMilter
from .oracle import TRACKED
from .test_milter_faults import wait_gone, worker_pid
from .test_milter_postfix import HTML, codec_of, html_of, mta, send

CAMPAIGN = "def validate_data_spool(ctx):\n    ctx.set('smtpapi_campaign_id', '{}')\n"


@pytest.fixture()
def capture():
    with CaptureServer() as server:
        yield server


def group_pids(milter: RunningMilter) -> set[int]:
    leader = worker_pid(milter)
    followers = Path(f"/proc/{leader}/task/{leader}/children").read_text().split()
    return {leader, *map(int, followers)}


def send_many(port: int, count: int) -> None:
    message = corpus.wrap_html(HTML, "8bit")
    rcpts = [f"r{n}@example.org" for n in range(count)]
    with ThreadPoolExecutor(max_workers=8) as pool:  # one connection per message
        list(pool.map(lambda rcpt: send(port, message, [rcpt]), rcpts))


def test_two_workers_share_the_load_reload_and_stop_together(tmp_path, capture):
    milter = RunningMilter(tmp_path, milter={"workers": 2})
    milter.write_policy("campaign.py", CAMPAIGN.format("v1"))
    with milter, mta(milter, capture) as postfix:
        assert len(group_pids(milter)) == 2
        send_many(postfix.smtp_port, 24)
        delivered = capture.wait_for(24, timeout=60)
        lines = milter.wait_for_log("message", count=24)
        assert {line["worker"] for line in lines} == {0, 1}  # both processes took mail
        ids = [line["transmission_id"] for line in lines]
        assert len(set(ids)) == len(ids)  # their id spaces do not overlap
        codec = codec_of(milter)

        def campaigns() -> set[str]:
            return {
                codec.decode(TRACKED.search(html_of(m.data)).group(1)).campaign_id
                for m in capture.messages
            }

        assert campaigns() == {"v1"} and len(delivered) == 24
        milter.write_policy("campaign.py", CAMPAIGN.format("v2"))
        milter.reload()
        milter.wait_for_log("reloaded", count=2)  # the leader passed SIGHUP on
        capture.clear()
        send_many(postfix.smtp_port, 16)
        capture.wait_for(16, timeout=60)
        assert campaigns() == {"v2"}
        pids = group_pids(milter)
        supervisor = milter.process
        assert supervisor is not None
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=30) == 0
        for pid in pids:
            wait_gone(pid)


def listening_socket_flags(pid: int, port: int) -> list[int]:
    """The file status flags of each descriptor ``pid`` holds on the socket listening on
    ``port`` (loopback TCP, as RunningMilter's)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # LISTEN
                inodes.add(fields[9])
    flags = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):
            if os.readlink(fd).removeprefix("socket:[").removesuffix("]") in inodes:
                info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
                flags.append(int(re.search(r"flags:\s+([0-7]+)", info).group(1), 8))
    return flags


def test_group_accepts_without_blocking(tmp_path):
    # Every process polls the one socket and all but one lose each accept(): blocking there,
    # a follower whose leader died never noticed the stop (it waited for a connection that
    # would never come) and held the old socket forever. EAGAIN sends libmilter back to poll.
    with RunningMilter(tmp_path, milter={"workers": 2}) as milter:
        milter.wait_for_log("milter starting", count=2)  # both forked and set up
        pids = group_pids(milter)
        assert len(pids) == 2
        for pid in pids:
            flags = listening_socket_flags(pid, milter.port)
            assert flags and all(flag & os.O_NONBLOCK for flag in flags), (pid, flags)


def test_killed_leader_takes_its_group_down_and_a_new_one_serves(tmp_path, capture):
    with RunningMilter(tmp_path, milter={"workers": 2}) as milter, mta(milter, capture) as pf:
        old = group_pids(milter)
        os.kill(worker_pid(milter), signal.SIGKILL)
        for pid in old:
            wait_gone(pid)  # the follower must not keep the socket from the next group
        milter.wait_for_log("milter starting", count=4, timeout=30)
        wait_for_port("127.0.0.1", milter.port, deadline_in(30))
        deadline = deadline_in(30)
        while True:  # the new group is listening; Postfix may still hold a dead connection
            try:
                send(pf.smtp_port, corpus.wrap_html(HTML, "8bit"))
                break
            except smtplib.SMTPResponseException:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        capture.wait_for(1, timeout=30)
        assert group_pids(milter).isdisjoint(old)


def test_killed_follower_restarts_the_group(tmp_path, capture):
    with RunningMilter(tmp_path, milter={"workers": 2}) as milter, mta(milter, capture) as pf:
        leader = worker_pid(milter)
        (follower,) = group_pids(milter) - {leader}
        os.kill(follower, signal.SIGKILL)
        milter.wait_for_log("milter worker process exited")
        wait_gone(leader)  # the leader stops the group; the supervisor starts a new one
        milter.wait_for_log("milter starting", count=4, timeout=30)
        wait_for_port("127.0.0.1", milter.port, deadline_in(30))
        send(pf.smtp_port, corpus.wrap_html(HTML, "8bit"))
        capture.wait_for(1, timeout=30)
