"""Policy loading cannot be raced into running someone else's code (issue 15, item 5).

Policies run as the milter's user. The old loader checked the file with ``stat`` (which
follows symbolic links) and then imported it by path in a second step: a link or a writable
directory let another user's code run instead of what was checked. These tests plant each
attack for real: a symbolic link, a group-writable directory above the policies, a file owned
by another user (``nobody``), and a file swapped after it was checked.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from smtpapi_milter.context import Variables
from smtpapi_milter.envelope import Envelope
from smtpapi_milter.policy import PolicyContext, PolicyLoadError, PolicySet, load_source
from smtpapi_milter.policy_files import read_policy_directory

ROOT = Path(__file__).resolve().parents[1]
GOOD = 'def validate_connect(ctx):\n    ctx.set("who", "good")\n'
EVIL = 'def validate_connect(ctx):\n    ctx.set("who", "evil")\n'

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def safe_dir(path: Path, mode: int = 0o755) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    return path


def who_runs(policies: PolicySet) -> str | None:
    variables = Variables()
    policies.run("validate_connect", PolicyContext("validate_connect", Envelope(), variables))
    return variables.get("who")


def test_a_checked_directory_loads(tmp_path):
    d = safe_dir(tmp_path / "policies")
    write(d / "a.py", GOOD)
    assert who_runs(PolicySet.load(d)) == "good"


def test_a_symbolic_link_to_a_policy_is_refused(tmp_path):
    # The target passes every check; the link is what an attacker swaps between check and
    # import. stat() followed it, so the old loader accepted it.
    d = safe_dir(tmp_path / "policies")
    target = write(safe_dir(tmp_path / "elsewhere") / "real.py", GOOD)
    (d / "linked.py").symlink_to(target)
    with pytest.raises(PolicyLoadError, match=r"linked\.py: refused, a symbolic link"):
        PolicySet.load(d)


@pytest.mark.parametrize("unsafe", ["policies", "outer"])
def test_a_group_writable_directory_on_the_way_is_refused(tmp_path, unsafe):
    outer = safe_dir(tmp_path / "outer")
    d = safe_dir(outer / "policies")
    write(d / "a.py", GOOD)
    (tmp_path / "outer" if unsafe == "outer" else d).chmod(0o775)
    with pytest.raises(PolicyLoadError, match="writable by group or others") as info:
        PolicySet.load(d)
    assert str(tmp_path / "outer" if unsafe == "outer" else d) in str(info.value)


def test_a_world_writable_directory_is_refused_unless_sticky_and_root_owned(tmp_path):
    shared = safe_dir(tmp_path / "shared", 0o777)
    d = safe_dir(shared / "policies")
    write(d / "a.py", GOOD)
    with pytest.raises(PolicyLoadError, match=str(shared)):
        PolicySet.load(d)
    shared.chmod(0o1777)  # like /tmp: nobody can rename another's entry
    if os.geteuid() == 0:
        assert who_runs(PolicySet.load(d)) == "good"
        os.chown(shared, pwd.getpwnam("nobody").pw_uid, -1)  # sticky but not root's
        with pytest.raises(PolicyLoadError, match="owned by uid"):
            PolicySet.load(d)


@as_root
def test_another_users_file_or_directory_is_refused(tmp_path):
    nobody = pwd.getpwnam("nobody")
    d = safe_dir(tmp_path / "policies")
    policy = write(d / "theirs.py", EVIL)
    os.chown(policy, nobody.pw_uid, nobody.pw_gid)
    with pytest.raises(
        PolicyLoadError, match=rf"theirs\.py: refused, owned by uid {nobody.pw_uid}"
    ):
        PolicySet.load(d)
    os.chown(policy, 0, 0)
    os.chown(d, nobody.pw_uid, nobody.pw_gid)  # they could replace any file in it
    with pytest.raises(PolicyLoadError, match=rf"{d}: refused, owned by uid {nobody.pw_uid}"):
        PolicySet.load(d)


def test_what_runs_is_the_bytes_that_were_checked(tmp_path):
    # By construction: the source is read (and checked) once; replacing the file afterwards,
    # as a racing attacker would between check and import, changes nothing that runs.
    d = safe_dir(tmp_path / "policies")
    policy = write(d / "a.py", GOOD)
    [source] = read_policy_directory(d)
    swapped = write(d / "swap.tmp", EVIL)
    swapped.replace(policy)
    policy.chmod(0o666)  # and now it would not even pass the check
    loaded = load_source(source)
    assert loaded.path == str(policy)
    variables = Variables()
    loaded.hooks["validate_connect"](PolicyContext("validate_connect", Envelope(), variables))
    assert variables.get("who") == "good"


def test_tracebacks_still_name_the_policy_file(tmp_path):
    d = safe_dir(tmp_path / "policies")
    write(d / "boom.py", "def validate_connect(ctx):\n    raise ValueError('x')\n")
    [policy] = PolicySet.load(d).policies
    with pytest.raises(ValueError) as info:
        policy.hooks["validate_connect"](None)
    assert info.traceback[-1].path == Path(d / "boom.py")


def test_a_fifo_in_place_of_a_policy_is_refused_without_hanging(tmp_path):
    d = safe_dir(tmp_path / "policies")
    os.mkfifo(d / "pipe.py", 0o644)
    with pytest.raises(PolicyLoadError, match=r"pipe\.py: refused, not a regular file"):
        PolicySet.load(d)


def test_a_configured_path_through_a_link_is_checked_where_it_leads(tmp_path):
    real = safe_dir(tmp_path / "real" / "policies")
    write(real / "a.py", GOOD)
    (tmp_path / "via").symlink_to(real)
    assert who_runs(PolicySet.load(tmp_path / "via")) == "good"
    (tmp_path / "real").chmod(0o777)
    with pytest.raises(PolicyLoadError, match=str(tmp_path / "real")):
        PolicySet.load(tmp_path / "via")


def test_check_refuses_a_policy_directory_others_can_write(tmp_path):
    d = safe_dir(tmp_path / "policies", 0o777)
    write(d / "a.py", GOOD)
    config = tmp_path / "smtpapi-milter.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n[policy]\ndirectory = "{d}"\n')
    result = subprocess.run(
        [sys.executable, "-m", "smtpapi_milter.cli", "check", "--config", str(config)],
        env={**os.environ, "PYTHONPATH": str(ROOT / "milter")},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert f"{d}: refused as a policy directory" in result.stderr.decode()
