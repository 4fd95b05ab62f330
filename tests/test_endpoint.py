"""Endpoint resolution and validation, and the settings file."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from legacy_msi_credential import SettingsFileError, resolve_endpoint
from legacy_msi_credential._endpoint import (
    default_settings_file,
    read_settings_file,
    token_url_from_base,
    validate_url,
)
from legacy_msi_credential._loopback import is_loopback_host

LOCAL = "http://127.0.0.1:50342/oauth2/token"


def settings(tmp_path: Path, content: bytes | str) -> str:
    path = tmp_path / "ManagedIdentity-Settings"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return str(path)


def test_order_argument_env_cloud_shell_settings_default(tmp_path: Path) -> None:
    file = settings(tmp_path, json.dumps({"url": "http://localhost:50343/"}))
    env = {
        "LEGACY_MSI_ENDPOINT": "http://127.0.0.2:1/oauth2/token",
        "MSI_ENDPOINT": "http://127.0.0.3:2/oauth2/token",
        "LEGACY_MSI_SETTINGS_FILE": file,
    }
    assert resolve_endpoint("http://localhost:9/oauth2/token", environ=env).source == "argument"
    assert resolve_endpoint(None, environ=env).url == "http://127.0.0.2:1/oauth2/token"
    del env["LEGACY_MSI_ENDPOINT"]
    choice = resolve_endpoint(None, environ=env)
    assert (choice.source, choice.url) == ("MSI_ENDPOINT", "http://127.0.0.3:2/oauth2/token")
    env["MSI_SECRET"] = "x"  # App Service's protocol, not this one
    choice = resolve_endpoint(None, environ=env)
    assert (choice.source, choice.url) == ("settings file", "http://localhost:50343/oauth2/token")
    assert file in choice.detail
    os.remove(file)
    choice = resolve_endpoint(None, environ=env)
    assert (choice.source, choice.url) == ("default", "http://localhost:50342/oauth2/token")


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("http://localhost:50342", "http://localhost:50342/oauth2/token"),
        ("http://localhost:50342/", "http://localhost:50342/oauth2/token"),
        ("http://localhost:50342/oauth2/token", "http://localhost:50342/oauth2/token"),
        ("http://localhost:50342/oauth2/token/", "http://localhost:50342/oauth2/token"),
        ("http://msiendpoint/", "http://msiendpoint/oauth2/token"),
    ],
)
def test_token_url_from_base(base: str, url: str) -> None:
    assert token_url_from_base(base) == url


def test_settings_file_with_extra_keys_and_bom(tmp_path: Path) -> None:
    file = settings(tmp_path, b"\xef\xbb\xbf" + json.dumps({"url": "http://localhost:50342/", "port": 50342}).encode())
    assert read_settings_file(file) == "http://localhost:50342/"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not UTF-8 JSON"),
        (b"\xff\xfe\x00binary", "not UTF-8 JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"port": 50342}', 'no "url" string'),
        ('{"url": 5}', 'no "url" string'),
        ("x" * (64 * 1024 + 1), "is 65537 bytes, more than the 65536"),
    ],
)
def test_malformed_settings_file_is_a_clear_error(tmp_path: Path, content: str | bytes, message: str) -> None:
    file = settings(tmp_path, content)
    with pytest.raises(SettingsFileError, match=message):
        read_settings_file(file)
    with pytest.raises(SettingsFileError):
        resolve_endpoint(None, environ={"LEGACY_MSI_SETTINGS_FILE": file})


@pytest.mark.parametrize("target", ["a settings file", "nothing (dangling)", "itself (a loop)"])
def test_settings_file_behind_a_symlink_is_refused(tmp_path: Path, target: str) -> None:
    """Refused by the check that names it, whatever the link points at: not by a later layer
    (``O_NOFOLLOW``'s "too many levels of symbolic links"), and a dangling link is not taken
    for a missing file (which would silently fall through to the default endpoint)."""
    link = tmp_path / "link"
    if target == "a settings file":
        link.symlink_to(settings(tmp_path, json.dumps({"url": "http://localhost:50342/"})))
    elif target == "nothing (dangling)":
        link.symlink_to(tmp_path / "missing")
    else:
        link.symlink_to(link)
    expected = re.escape(f"settings file {link}: is a symbolic link; refusing to follow it")
    with pytest.raises(SettingsFileError, match=f"^{expected}$"):
        read_settings_file(str(link))
    with pytest.raises(SettingsFileError, match=f"^{expected}$"):
        resolve_endpoint(None, environ={"LEGACY_MSI_SETTINGS_FILE": str(link)})


def test_settings_path_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsFileError, match="not a regular file"):
        read_settings_file(str(tmp_path))


def test_settings_file_pointing_at_a_remote_http_host_is_refused(tmp_path: Path) -> None:
    file = settings(tmp_path, json.dumps({"url": "http://msiendpoint/"}))
    with pytest.raises(SettingsFileError, match="not a loopback address"):
        resolve_endpoint(None, environ={"LEGACY_MSI_SETTINGS_FILE": file})


def test_settings_file_locations() -> None:
    assert default_settings_file({}, "linux") == "/var/lib/waagent/ManagedIdentity-Settings"
    assert default_settings_file({"SystemDrive": "D:"}, "win32") == r"D:\WindowsAzure\Config\ManagedIdentity-Settings"
    assert default_settings_file({}, "win32") == r"C:\WindowsAzure\Config\ManagedIdentity-Settings"
    assert default_settings_file({"LEGACY_MSI_SETTINGS_FILE": "/x"}, "linux") == "/x"


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST", "127.0.0.1", "127.9.8.7", "::1", "[::1]"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize(
    "host",
    [
        "169.254.169.254",
        "10.0.0.1",
        "example.com",
        "localhost.example.com",
        "localhost.",
        "a.localhost",
        "127.0.0.1.",
        "0x7f.1",
        "2130706433",
        "::2",
        "",
    ],
)
def test_non_loopback_hosts(host: str) -> None:
    assert not is_loopback_host(host)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "empty"),
        ("ftp://localhost/oauth2/token", "absolute http"),
        ("localhost:50342/oauth2/token", "absolute http"),
        ("http://user:pw@localhost:50342/oauth2/token", "user information"),
        ("http://localhost:50342/oauth2/token#x", "fragment"),
        ("http://localhost:99999/oauth2/token", "not a valid URL"),
        ("http://localhost:0/oauth2/token", "port 0"),
        ("http://local host/oauth2/token", "whitespace"),
        ("http://169.254.169.254/metadata/identity/oauth2/token", "not a loopback address"),
        ("http://10.1.2.3:50342/oauth2/token", "not a loopback address"),
    ],
)
def test_unusable_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_url(url, what="test")


def test_https_anywhere_and_http_with_opt_in() -> None:
    assert validate_url("https://tokens.example/oauth2/token", what="t")
    assert validate_url("http://10.1.2.3:50342/oauth2/token", what="t", allow_insecure_http=True)
    assert validate_url(LOCAL, what="t") == LOCAL
    assert validate_url("http://[::1]:50342/oauth2/token", what="t")
