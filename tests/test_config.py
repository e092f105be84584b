"""Configuration: Momentum's option names and defaults, errors naming file and key."""

import pytest

from smtpapi_milter.config import Config, ConfigError, load_config


def write(tmp_path, text):
    path = tmp_path / "smtpapi-milter.toml"
    path.write_text(text)
    return str(path)


def test_defaults_match_momentum():
    config = Config()
    s = config.smtpapi
    assert (s.open_tracking_enabled, s.click_tracking_enabled) == (False, False)
    assert (s.open_tracking_scheme, s.click_tracking_scheme) == ("http", "http")
    assert s.tracking_domain == "localhost:8080"
    assert s.tracking_link_expiry == 31536000
    assert (s.multi_recipient, s.reinject_to) == ("auto", "")
    assert s.initial_open_pixel_tracking is False
    assert s.click_tracking_text is True
    assert config.engagement_tracker.listen == "127.0.0.1:8080"
    assert config.engagement_tracker.admin_listen == "127.0.0.1:8081"
    assert config.engagement_tracker.click_tracking_include_metadata is True
    assert config.state_dir == "/var/lib/smtpapi-milter"
    assert config.event_store_url == "sqlite:////var/lib/smtpapi-milter/events.sqlite3"


def test_full_file_loads(tmp_path):
    path = write(
        tmp_path,
        """
state_dir = "/tmp/x"
[smtpapi]
open_tracking_enabled = true
click_tracking_scheme = "https"
tracking_domain = "click.example.com"
[smtpapi.listener.brand-a]
tracking_domain = "click.brand-a.example"
open_tracking_enabled = false
[milter]
socket = "unix:/run/smtpapi-milter/milter.sock"
on_error = "accept"
[policy]
directory = "/etc/x"
[engagement_tracker]
keys = ["k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]
[events]
store = "postgresql://events@db/events"
[[webhooks]]
url = "https://hooks.example.com/sparkpost"
auth = "bearer"
token = "t"
""",
    )
    config = load_config(path)
    assert config.source == path
    assert config.smtpapi.open_tracking_enabled is True
    brand = config.smtpapi.for_listener("brand-a")
    assert brand.tracking_domain == "click.brand-a.example"
    assert brand.open_tracking_enabled is False
    assert brand.click_tracking_scheme == "https"  # not overridden: the main value
    assert config.smtpapi.for_listener("other") is config.smtpapi
    assert config.milter.on_error == "accept"
    assert config.webhooks[0].auth == "bearer"


@pytest.mark.parametrize(
    "text, key",
    [
        ("[smtpapi]\nopen_tracking = true\n", "smtpapi.open_tracking"),
        ("bogus = 1\n", "bogus"),
        ("[smtpapi.listener.x]\nnode_id = 3\n", "smtpapi.listener.x.node_id"),
        ("[engagement_tracker]\nlisten_port = 1\n", "engagement_tracker.listen_port"),
        ("[[webhooks]]\nurl = 'http://x/'\nretries = 3\n", "webhooks[0].retries"),
    ],
)
def test_unknown_key_names_key_and_file(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: unknown key '{key}'"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[smtpapi]\nopen_tracking_enabled = 'yes'\n", "'smtpapi.open_tracking_enabled' must be"),
        ("[smtpapi]\nmulti_recipient = 'fan-out'\n", "'smtpapi.multi_recipient' must be one of"),
        ("[smtpapi]\nmulti_recipient = 'split'\n", "needs 'smtpapi.reinject_to'"),
        ("[smtpapi]\nmax_tracked_links = 0\n", "'smtpapi.max_tracked_links' must be at least 1"),
        ("[smtpapi]\nmta_message_size_limit = -1\n", "'smtpapi.mta_message_size_limit' must not"),
        ("[smtpapi.listener.x]\nmax_tracked_links = 5\n", "unknown key 'smtpapi.listener.x.max"),
        (
            "[smtpapi.listener.x]\nmulti_recipient = 'split'\n",
            "'smtpapi.listener.x.multi_recipient' = \"split\" needs",
        ),
        ("[smtpapi]\ntracking_link_expiry = true\n", "must be an integer"),
        ("[smtpapi]\ntracking_domain = 'http://x/'\n", "'smtpapi.tracking_domain'"),
        ("[smtpapi]\nnode_id = 5000\n", "'smtpapi.node_id'"),
        ("[engagement_tracker]\nkeys = ['nocolon']\n", "'engagement_tracker.keys[0]'"),
        ("[events]\nstore = 'mysql://x'\n", "'events.store'"),
        ("[policy]\ntimeout = -1\n", "'policy.timeout' must not be negative"),
        ("[milter]\nworkers = -1\n", "'milter.workers' must be between"),
        ("[suppression]\ncache_seconds = -1\n", "'suppression.cache_seconds' must be between"),
        ("[smtpapi\n", "not valid TOML"),
    ],
)
def test_bad_values_name_the_key(tmp_path, text, fragment):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(path)
    assert fragment in str(info.value)


def test_missing_named_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(str(tmp_path / "absent.toml"))


def test_missing_default_file_means_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("SMTPAPI_MILTER_CONFIG", raising=False)
    monkeypatch.setattr("smtpapi_milter.config.DEFAULT_CONFIG_PATH", str(tmp_path / "none"))
    assert load_config(None) == Config()


def test_environment_variable_names_the_file(monkeypatch, tmp_path):
    path = write(tmp_path, "[smtpapi]\nclick_tracking_enabled = true\n")
    monkeypatch.setenv("SMTPAPI_MILTER_CONFIG", path)
    assert load_config(None).smtpapi.click_tracking_enabled is True
