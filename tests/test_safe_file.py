"""The settings file (``--write-settings``, ``write_settings``) is written whole, at once, never
through a link, in a folder no other user can swap it in, and removed on stop only while it
is still the file written (``_safe_file``, used by both servers and the CLI)."""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
import threading
from pathlib import Path

import pytest

from legacy_msi_credential._server._safe_file import UnsafeFolderError, WriteError, _sync_folder, write_file
from legacy_msi_credential.cli._common import settings_file
from legacy_msi_credential.emulator import Emulator

from .conftest import cli

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions and links")
as_root = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown needs root")

#: Rewrites while a reader reads: enough for the old in-place write to be caught mid-way
#: (about 88% of reads saw a partial document), few enough to stay well under a second
#: (each write is flushed to disk).
REWRITES = 50


@pytest.fixture(scope="module")
def emulator() -> Emulator:
    with Emulator(port=0, sign=False) as running:
        yield running


@posix_only
def test_a_link_at_the_path_is_replaced_and_its_target_never_touched(tmp_path: Path) -> None:
    """legacy-msi emulate --write-settings LINK: the file the link pointed at is the same after
    start (seen from the command run meanwhile) and after stop, and the link is gone."""
    victim = tmp_path / "precious"
    victim.write_text("not yours\n")
    link = tmp_path / "ManagedIdentity-Settings"
    link.symlink_to(victim)
    seen = tmp_path / "seen.json"
    look = (
        "import json, os; "
        f"p, v = {str(link)!r}, {str(victim)!r}; "
        "found = {'link': os.path.islink(p), 'document': open(p).read(), 'victim': open(v).read()}; "
        f"open({str(seen)!r}, 'w').write(json.dumps(found))"
    )
    written = ("--write-settings", str(link))
    result = cli("emulate", "--port", "0", "--unsigned", *written, "--", sys.executable, "-c", look)
    assert result.returncode == 0, result.stderr
    during = json.loads(seen.read_text())
    assert during["victim"] == "not yours\n"  # after start: the link's target untouched
    assert during["link"] is False  # the link itself was replaced by the settings file
    assert json.loads(during["document"])["url"].startswith("http://localhost:")
    assert victim.read_text() == "not yours\n"  # after stop: untouched still
    assert not link.is_symlink()
    assert not link.exists()  # the file written is removed on stop


def test_readers_during_rewrites_see_only_whole_documents(emulator: Emulator, tmp_path: Path) -> None:
    path = tmp_path / "ManagedIdentity-Settings"
    emulator.write_settings(path)
    expected = {"url": f"http://localhost:{emulator.port}/"}
    reads = {"whole": 0, "partial": 0}
    first_read = threading.Event()
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            with open(path, "rb") as handle:
                raw = handle.read()
            try:
                whole = json.loads(raw) == expected
            except ValueError:
                whole = False
            reads["whole" if whole else "partial"] += 1
            first_read.set()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        assert first_read.wait(5)
        for _ in range(REWRITES):
            emulator.write_settings(path)
    finally:
        done.set()
        thread.join(5)
    assert reads["whole"] >= REWRITES // 5  # the reader did read while the writes happened
    assert reads["partial"] == 0, reads


@posix_only
@pytest.mark.parametrize("mode", [0o644, 0o640])
def test_the_mode_is_exactly_the_one_asked_for_whatever_the_umask(tmp_path: Path, mode: int) -> None:
    previous = os.umask(0o077)
    try:
        written = write_file(tmp_path / "file", b"{}", mode=mode)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.lstat(written.path).st_mode) == mode
    assert sorted(os.listdir(tmp_path)) == ["file"]  # no temporary file left


@posix_only
def test_a_folder_any_user_may_write_is_refused_unless_sticky(emulator: Emulator, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(UnsafeFolderError) as caught:
        emulator.write_settings(shared / "ManagedIdentity-Settings")
    assert str(caught.value) == (
        f"refusing to write the extension's settings file in {shared}: any user may write that folder and it is "
        "not sticky, so another user could replace the file with their own; choose a folder only its owner "
        "can write, owned by root or this user (or a sticky one owned by root, like /tmp)"
    )
    assert os.listdir(shared) == []  # nothing written, not even a temporary file
    result = cli("emulate", "--port", "0", "--write-settings", str(shared / "x"), "--", "true")
    assert result.returncode == 1
    assert result.stderr == f"legacy-msi: error: {caught.value}\n"


@posix_only
@as_root
def test_a_sticky_folder_is_accepted_when_root_owns_it_and_refused_when_another_user_does(
    emulator: Emulator, tmp_path: Path
) -> None:
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)  # as /tmp
    os.chown(sticky, 0, 0)
    path = emulator.write_settings(sticky / "ManagedIdentity-Settings")
    assert json.loads(Path(path).read_text()) == {"url": f"http://localhost:{emulator.port}/"}
    os.chown(sticky, 12345, 12345)  # a user who could rename or remove anything in it
    with pytest.raises(UnsafeFolderError, match="that folder's owner \\(uid 12345\\) is neither root nor this user"):
        emulator.write_settings(sticky / "other")


@posix_only
@as_root
def test_a_folder_another_user_owns_is_refused_whatever_its_mode(emulator: Emulator, tmp_path: Path) -> None:
    """Its owner may rename anything in it (or chmod it first): a root service writing there
    would publish what that user swaps in."""
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, 65534, 65534)
    with pytest.raises(UnsafeFolderError, match="owner \\(uid 65534\\) is neither root nor this user"):
        emulator.write_settings(theirs / "ManagedIdentity-Settings")
    assert os.listdir(theirs) == []


@posix_only
@as_root
def test_a_folder_a_shared_group_may_write_is_refused_and_a_private_one_accepted(
    emulator: Emulator, tmp_path: Path
) -> None:
    import grp
    import pwd

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o775)
    nogroup = pwd.getpwuid(65534).pw_gid  # the group of "nobody", which is not root's
    os.chown(shared, 0, nogroup)
    with pytest.raises(UnsafeFolderError, match=f"its group \\(gid {nogroup}\\) may write that folder"):
        emulator.write_settings(shared / "ManagedIdentity-Settings")
    primary = {user.pw_gid for user in pwd.getpwall()}
    unlisted = next((g for g in grp.getgrall() if not g.gr_mem and g.gr_gid not in primary), None)
    if unlisted is not None:  # no member listed, nobody's primary group: members may still come unlisted
        os.chown(shared, 0, unlisted.gr_gid)
        with pytest.raises(UnsafeFolderError, match=f"its group \\(gid {unlisted.gr_gid}\\) may write"):
            emulator.write_settings(shared / "ManagedIdentity-Settings")
    root_group = grp.getgrgid(0)
    if root_group.gr_mem or any(user.pw_gid == 0 and user.pw_uid != 0 for user in pwd.getpwall()):
        pytest.skip("group 0 is not root's alone here")
    os.chown(shared, 0, 0)  # root's own group: no other member, as a user private group
    emulator.write_settings(shared / "ManagedIdentity-Settings")
    assert os.listdir(shared) == ["ManagedIdentity-Settings"]


@posix_only
def test_a_link_on_the_way_is_resolved_once_and_the_file_written_where_it_led(tmp_path: Path) -> None:
    """The folder checked is the folder written: a link in a folder nobody checked (here one any
    user may write) cannot lead the same path elsewhere later, since the file goes where the
    link led when it was checked, and is removed from there."""
    safe = tmp_path / "safe"
    safe.mkdir(mode=0o755)
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "conf").symlink_to(safe)
    shared.chmod(0o777)
    written = write_file(shared / "conf" / "settings", b"{}", mode=0o644)
    assert written.path == str(safe.resolve() / "settings")
    (shared / "conf").unlink()  # another user swaps the link for a folder of their own
    (shared / "conf").mkdir()
    assert written.is_ours()
    assert written.remove()
    assert os.listdir(safe) == []


@posix_only
def test_a_folder_under_one_another_user_may_write_is_refused(emulator: Emulator, tmp_path: Path) -> None:
    """Whoever may write a folder above can rename the folder away and put their own in its place."""
    shared = tmp_path / "shared"
    inner = shared / "inner"
    inner.mkdir(parents=True)
    shared.chmod(0o777)
    with pytest.raises(UnsafeFolderError) as caught:
        emulator.write_settings(inner / "ManagedIdentity-Settings")
    assert f"in {inner} (in {shared}): any user may write that folder" in str(caught.value)
    assert os.listdir(inner) == []


@posix_only
@pytest.mark.parametrize("replacement", ["file", "link"])
def test_stop_leaves_what_replaced_the_file_since(emulator: Emulator, tmp_path: Path, replacement: str) -> None:
    path = tmp_path / "ManagedIdentity-Settings"
    someone_elses = tmp_path / "theirs"
    someone_elses.write_text('{"url": "http://localhost:50343/"}')
    with settings_file(emulator, str(path)) as written:
        assert written == str(path)
        if replacement == "file":
            os.replace(someone_elses, path)  # another writer's file, a new inode at the path
        else:
            path.unlink()
            path.symlink_to(someone_elses)
    assert path.exists() or path.is_symlink()
    assert path.read_text() == '{"url": "http://localhost:50343/"}'


def test_stop_removes_the_file_it_wrote(emulator: Emulator, tmp_path: Path) -> None:
    path = tmp_path / "ManagedIdentity-Settings"
    with settings_file(emulator, str(path)):
        assert path.is_file()
    assert not path.exists()


def test_a_failed_write_says_where_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "a-folder"
    target.mkdir()
    with pytest.raises(WriteError, match=f"cannot write the thing {target}: Is a directory"):
        write_file(target, b"{}", mode=0o644, what="the thing")
    assert os.listdir(tmp_path) == ["a-folder"]
    assert os.listdir(target) == []


def test_a_folder_that_does_not_exist_is_named_in_the_error(tmp_path: Path) -> None:
    folder = tmp_path / "missing"
    with pytest.raises(WriteError, match=f"cannot write the thing in {folder}: No such file or directory") as caught:
        write_file(folder / "settings", b"{}", mode=0o644, what="the thing")
    assert caught.value.errno == errno.ENOENT
    assert os.listdir(tmp_path) == []


def test_a_folder_that_is_a_file_is_named_in_the_error_and_left_as_it_was(tmp_path: Path) -> None:
    """The folder's check passes (a file can be stat'ed), the temporary file cannot be made."""
    parent = tmp_path / "a-file"
    parent.write_bytes(b"untouched")
    with pytest.raises(WriteError, match=f"cannot write the thing in {parent}: Not a directory") as caught:
        write_file(parent / "settings", b"{}", mode=0o644, what="the thing")
    assert caught.value.errno == errno.ENOTDIR
    assert os.listdir(tmp_path) == ["a-file"]
    assert parent.read_bytes() == b"untouched"


def test_a_file_removed_by_someone_else_is_no_longer_ours_and_not_removed_again(tmp_path: Path) -> None:
    path = tmp_path / "settings"
    written = write_file(path, b"{}", mode=0o644)
    assert written.is_ours()
    os.unlink(path)
    assert not written.is_ours()
    assert not written.remove()


def _descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs procfs, which cannot sync a folder")
def test_a_folder_its_file_system_cannot_sync_or_that_cannot_be_opened_is_not_an_error() -> None:
    """procfs answers EINVAL to fsync on a folder, as some network file systems do; the file
    itself was synced, so the write stands, and the folder's descriptor is closed."""
    before = _descriptors()
    _sync_folder("/proc/self")
    _sync_folder("/nonexistent-folder-of-legacy-msi-tests")
    assert _descriptors() == before
