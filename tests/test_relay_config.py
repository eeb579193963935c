"""Relay settings: defaults < TOML ``[relay]`` < ``CRDT_SYNC_RELAY_*`` < command-line options;
bad values are a ConfigError that names the setting; the allow-list file (comments, blank
lines, ids as ``crdt-sync init`` prints them) is refused with the line number of a bad id."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from crdt_sync.identity import Identity
from crdt_sync.relay.config import AllowList, ConfigError, RelayConfig, load_config

TOML = """
# operator's settings
[relay]
host = "0.0.0.0"
port = 9000
max-connections = 500
rate_envelopes = 50
send_timeout = 5.5
log_format = "json"
allow_list = "/etc/crdt-sync/allowed"
"""


@pytest.fixture
def toml_file(tmp_path: Path) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(TOML)
    return path


def test_defaults() -> None:
    config = load_config({}, environ={})
    assert config == RelayConfig()
    assert (config.host, config.port, config.allow_list) == ("127.0.0.1", 8787, None)
    assert config.log_format == "text"
    assert config.membership is True  # enforced by default (issue 12); an operator may turn it off
    assert load_config({}, environ={"CRDT_SYNC_RELAY_MEMBERSHIP": "off"}).membership is False


def test_toml_file_over_defaults(toml_file: Path) -> None:
    config = load_config({}, environ={}, config_file=toml_file)
    assert config.host == "0.0.0.0" and config.port == 9000
    assert config.max_connections == 500  # dashes in keys are accepted as operators write them
    assert config.rate_envelopes == 50.0 and config.send_timeout == 5.5
    assert config.log_format == "json" and config.allow_list == Path("/etc/crdt-sync/allowed")
    assert config.rate_bytes == RelayConfig().rate_bytes  # unset: the default


def test_toml_file_named_by_the_environment(toml_file: Path) -> None:
    config = load_config({}, environ={"CRDT_SYNC_RELAY_CONFIG": str(toml_file)})
    assert config.port == 9000


def test_environment_over_toml_and_options_over_both(toml_file: Path, tmp_path: Path) -> None:
    environ = {"CRDT_SYNC_RELAY_PORT": "9100", "CRDT_SYNC_RELAY_HOST": "10.0.0.5",
               "CRDT_SYNC_RELAY_DATA": str(tmp_path / "from-env"), "CRDT_SYNC_RELAY_SEND_TIMEOUT": "2"}
    config = load_config({}, environ=environ, config_file=toml_file)
    assert (config.port, config.host, config.data) == (9100, "10.0.0.5", tmp_path / "from-env")
    assert config.send_timeout == 2.0 and config.max_connections == 500  # the rest from TOML

    # Options left unset (None) do not override; set ones win over everything.
    options = {"port": 9200, "host": None, "data": tmp_path / "from-cli", "max_connections": None}
    config = load_config(options, environ=environ, config_file=toml_file)
    assert (config.port, config.host, config.data) == (9200, "10.0.0.5", tmp_path / "from-cli")
    assert config.max_connections == 500


def test_unrelated_environment_variables_are_ignored() -> None:
    assert load_config({}, environ={"CRDT_SYNC_DATA": "/x", "CRDT_SYNC_RELAY": "1"}) == RelayConfig()


@pytest.mark.parametrize(("settings", "message"), [
    ({"port": "eighty"}, "port = 'eighty' is not a valid int"),
    ({"port": "80.5"}, "port = '80.5' is not a valid int"),
    ({"port": "70000"}, "port = 70000 is not 0..65535"),
    ({"port": "-1"}, "port = -1 is not 0..65535"),
    ({"max_connections": "0"}, "max_connections = 0 allows no device"),
    ({"rate_envelopes": "fast"}, "rate_envelopes = 'fast' is not a valid float"),
    ({"rate_envelopes": "-5"}, "rate_envelopes = -5.0 must be a positive number"),
    ({"rate_bytes": "nan"}, "rate_bytes = nan must be a positive number"),
    ({"send_timeout": "0"}, "send_timeout = 0.0 must be a positive number"),
    ({"log_format": "xml"}, "log_format is text or json"),
    ({"log_level": "verbose"}, "log_level = 'verbose' is debug, info"),
    ({"cert": "/etc/relay.pem"}, "wss needs both cert and key"),
    ({"prot": "9000", "colour": "red"}, "unknown relay settings: colour, prot"),
])
def test_bad_values_are_config_errors_that_name_the_setting(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(settings, environ={})
    if "unknown" in message:
        return  # CRDT_SYNC_RELAY_<unknown> is not a setting at all: the environment is not checked
    # The same value from the environment is refused the same way.
    environ = {f"CRDT_SYNC_RELAY_{name.upper()}": value for name, value in settings.items()}
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config({}, environ=environ)


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="port"):
        load_config({"port": "x"}, environ={})


@pytest.mark.parametrize(("text", "message"), [
    ("[relay\nport = 1\n", "cannot read relay config"),
    ("relay = 5\n", "relay must be a table"),
    ("[relay]\nport = true\n", "port = True is not a valid int"),
    ("[relay]\nport = 1\nbogus = 2\n", "unknown relay settings: bogus"),
])
def test_bad_toml_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config({}, environ={}, config_file=path)


def test_missing_toml_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read relay config .*missing\.toml"):
        load_config({}, environ={}, config_file=tmp_path / "missing.toml")


# -- the allow-list --------------------------------------------------------------------------------
def ids(count: int) -> list[str]:
    return [Identity.generate().id for _ in range(count)]


def test_no_file_means_open_access() -> None:
    allow = AllowList(None)
    assert allow.devices is None and allow.reload() == 0
    assert allow.refusal(ids(1)[0]) is None


def test_allow_list_with_comments_and_blank_lines(tmp_path: Path) -> None:
    a, b, c = ids(3)
    path = tmp_path / "allowed"
    path.write_text(f"# field team 7\n\n{a}\n   {b}   # tablet of the site lead\n\t\n"
                    f"{a}\n# {c} left the team\n")
    allow = AllowList(path)
    assert allow.devices == frozenset({a, b})
    assert allow.refusal(a) is None and allow.refusal(b) is None
    refusal = allow.refusal(c)
    assert refusal is not None and c in refusal and "allow-list" in refusal


def test_ids_are_compared_in_their_canonical_form(tmp_path: Path) -> None:
    a = ids(1)[0]
    path = tmp_path / "allowed"
    path.write_text(f"{a.upper()}\n")  # pasted in capitals
    assert AllowList(path).refusal(a) is None


@pytest.mark.parametrize(("bad", "line"), [("not-a-device-id", 3), ("abc", 3), ("a" * 60, 3)])
def test_bad_ids_are_refused_with_their_line_number(tmp_path: Path, bad: str, line: int) -> None:
    a, b = ids(2)
    path = tmp_path / "allowed"
    path.write_text(f"{a}\n# next one is wrong\n{bad}  # typo\n{b}\n")
    with pytest.raises(ConfigError, match=f"{path}:{line}: '{bad}' is not a device id"):
        AllowList(path)


def test_a_failed_reload_keeps_the_previous_list(tmp_path: Path) -> None:
    a, b = ids(2)
    path = tmp_path / "allowed"
    path.write_text(f"{a}\n")
    allow = AllowList(path)
    path.write_text(f"{a}\n{b}\nbroken\n")
    with pytest.raises(ConfigError, match=":3:"):
        allow.reload()
    assert allow.devices == frozenset({a})
    path.write_text(f"{a}\n{b}\n")
    assert allow.reload() == 2 and allow.refusal(b) is None


def test_missing_allow_list_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read allow-list .*nowhere"):
        AllowList(tmp_path / "nowhere")


# -- trusted proxies ---------------------------------------------------------------------------------
def test_trusted_proxies_default_to_none_and_come_from_each_source(tmp_path: Path) -> None:
    assert load_config({}, environ={}).trusted_proxies == ()
    assert load_config({}, environ={}).forwarded_header == "x-forwarded-for"
    path = tmp_path / "relay.toml"
    path.write_text('[relay]\ntrusted_proxies = ["10.0.0.7", "fd00::/8"]\nforwarded_header = "Forwarded"\n')
    config = load_config({}, environ={}, config_file=path)
    assert config.trusted_proxies == ("10.0.0.7/32", "fd00::/8")  # canonical form
    assert config.forwarded_header == "forwarded"
    environ = {"CRDT_SYNC_RELAY_TRUSTED_PROXIES": "10.1.0.0/16, 192.0.2.5"}
    config = load_config({}, environ=environ, config_file=path)
    assert config.trusted_proxies == ("10.1.0.0/16", "192.0.2.5/32")
    config = load_config({"trusted_proxies": "127.0.0.9", "forwarded_header": "none"}, environ=environ,
                         config_file=path)
    assert (config.trusted_proxies, config.forwarded_header) == (("127.0.0.9/32",), "none")
    assert load_config({}, environ={"CRDT_SYNC_RELAY_TRUSTED_PROXIES": ""}).trusted_proxies == ()


@pytest.mark.parametrize(("value", "message"), [
    ("10.0.0.1/8", "'10.0.0.1/8' has host bits set (the network is 10.0.0.0/8)"),
    ("10.0.0.300", "'10.0.0.300' is not an IP address or a CIDR network"),
    ("proxy.internal", "'proxy.internal' is not an IP address or a CIDR network"),
    ("10.0.0.0/33", "'10.0.0.0/33' is not an IP address"),
])
def test_bad_trusted_proxies_name_the_entry(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match="trusted_proxies: " + re.escape(message)):
        load_config({"trusted_proxies": value}, environ={})
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config({}, environ={"CRDT_SYNC_RELAY_TRUSTED_PROXIES": value})


def test_trusted_proxies_in_toml_must_be_strings(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text("[relay]\ntrusted_proxies = [10]\n")
    with pytest.raises(ConfigError, match="trusted_proxies = \\[10\\] is not a list of addresses"):
        load_config({}, environ={}, config_file=path)
    with pytest.raises(ConfigError, match="forwarded_header = 'x-real-ip' is one of x-forwarded-for"):
        load_config({"forwarded_header": "x-real-ip"}, environ={})
