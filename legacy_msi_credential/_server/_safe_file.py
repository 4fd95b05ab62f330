"""Writing a file other processes read, and removing it only while it is still ours.

Standard library only. The extension's settings file (what ``--write-settings`` writes) is
read by every credential on the machine, at any moment, and it lives in a folder a
service writes as root: so it is never written in place (a reader would see half a
document and keep that failure), never through a symbolic link (the link's target would
be overwritten), and never in a folder where another user could swap it. The same rules
serve any file a service publishes for others to read; the mode is the caller's (0644 for
the settings file, which every local user's credential reads; 0640 for a file only a
group may read).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import sys
from dataclasses import dataclass

__all__ = ["UnsafeFolderError", "WriteError", "WrittenFile", "write_file"]

#: Bytes of randomness in a temporary file's name: guessing it is hopeless, and O_EXCL
#: refuses a name that exists anyway.
_TEMPORARY_NAME_BYTES = 8


class WriteError(OSError):
    """A file could not be written; the message names it and why, and nothing was left behind."""

    def __str__(self) -> str:
        return str(self.strerror)  # without "[Errno N]": the message names the reason


class UnsafeFolderError(WriteError):
    """The folder lets other users replace what is written there; nothing was written."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EPERM, message)


@dataclass(frozen=True)
class WrittenFile:
    """A file :func:`write_file` put in place: its path and the inode it was written to.

    The inode is what tells this file from one that replaced it since (another writer's, or
    a link planted in its place): :meth:`remove` removes the file only while it is this one.
    """

    path: str
    device: int
    inode: int

    def is_ours(self) -> bool:
        """Whether the path still names this very file (not a link, not another file)."""
        try:
            now = os.lstat(self.path)
        except OSError:
            return False
        return stat.S_ISREG(now.st_mode) and (now.st_dev, now.st_ino) == (self.device, self.inode)

    def remove(self) -> bool:
        """Remove the file if the path still names it; whether it was removed.

        A link, or a file someone else put there since, is left alone. The folder was
        checked to let no other user rename files in it, so nothing can swap the file
        between the check and the removal but this process's own user.
        """
        if not self.is_ours():
            return False
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return False
        return True


def write_file(path: str | os.PathLike[str], data: bytes, *, mode: int, what: str = "file") -> WrittenFile:
    """Put ``data`` at ``path`` whole, at once, and never through a link.

    The bytes go to a new file in the same folder (``O_CREAT | O_EXCL | O_NOFOLLOW``, given
    ``mode`` exactly, whatever the umask), are flushed to disk, and the new file is renamed
    over ``path``: a reader sees the old document or the new one, never a part; a link at
    ``path`` is replaced, its target untouched.

    Args:
        path: Where the file goes.
        data: Its whole content.
        mode: Its permission bits (``0o644``: every local user may read it).
        what: What the file is, for messages (``"the extension's settings file"``).

    Returns:
        The file written, to remove it later only while it is still this one.

    Raises:
        UnsafeFolderError: Another user could replace the file: the folder, or one above
            it, is owned by another user than root or this one, or writable by another user
            or group and not sticky.
        WriteError: It could not be written (the message names the path and why).
    """
    given = os.path.abspath(os.fspath(path))
    # The folder checked is the folder written: links resolved once, here, so that a link on
    # the way (in a folder nobody checked) cannot later lead the same path somewhere else.
    folder = _check_folder(os.path.dirname(given), what)
    target = os.path.join(folder, os.path.basename(given))
    temporary = os.path.join(folder, f".{os.path.basename(target)}.{secrets.token_hex(_TEMPORARY_NAME_BYTES)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(temporary, flags, mode)
    except OSError as exc:
        raise WriteError(exc.errno, f"cannot write {what} in {folder}: {exc.strerror}") from None
    try:
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, mode)  # exactly the mode asked for: the umask may have narrowed it
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            written = os.fstat(fd)
        finally:
            os.close(fd)
        os.replace(temporary, target)  # replaces a link itself, never its target
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise WriteError(exc.errno, f"cannot write {what} {target}: {exc.strerror}") from None
    _sync_folder(folder)
    return WrittenFile(target, written.st_dev, written.st_ino)


def _check_folder(folder: str, what: str) -> str:
    """Refuse a folder in which another user could rename, remove or replace the file.

    Another user can do that where they can write the folder or any folder above it (a
    folder above can have this one renamed away and another put in its place), and where
    they own one of them. So the folder and each one above it, links resolved, must be
    owned by root or this user, and writable by nobody else: not by any user unless sticky
    (then only a file's owner, the folder's owner and root may rename a file in it, as in
    ``/tmp``), and not by a group unless sticky or the owner's own private group (Fedora's
    and Debian's user private groups, which have no other member). On Windows permissions
    are access lists this cannot read: there it checks nothing.

    Returns:
        The folder with its links resolved: where to write.
    """
    if sys.platform == "win32":
        return os.path.abspath(folder)
    real = os.path.realpath(folder)
    current = real
    while True:
        try:
            info = os.stat(current)
        except OSError as exc:
            raise WriteError(exc.errno, f"cannot write {what} in {folder}: {exc.strerror}") from None
        why = _unsafe(info)
        if why is not None:
            if current == real:
                where, fix = folder, "choose a folder only its owner can write, owned by root or this user"
            else:
                where = f"{folder} (in {current})"
                fix = f"make {current} writable only by its owner, root or this user, or choose a folder outside it"
            raise UnsafeFolderError(
                f"refusing to write {what} in {where}: {why}, so another user could replace the file with their "
                f"own; {fix} (or a sticky one owned by root, like /tmp)"
            )
        parent = os.path.dirname(current)
        if parent == current:
            return real
        current = parent


def _unsafe(info: os.stat_result) -> str | None:
    """Why another user could replace a file in the folder ``info`` describes, or None."""
    if info.st_uid not in (0, os.geteuid()):
        return f"that folder's owner (uid {info.st_uid}) is neither root nor this user"
    sticky = bool(info.st_mode & stat.S_ISVTX)
    if info.st_mode & stat.S_IWOTH and not sticky:
        return "any user may write that folder and it is not sticky"
    if info.st_mode & stat.S_IWGRP and not sticky and not _private_group(info.st_gid, info.st_uid):
        return f"its group (gid {info.st_gid}) may write that folder and it is not sticky"
    return None


def _private_group(gid: int, uid: int) -> bool:
    """Whether group ``gid`` is user ``uid``'s private group: that user's primary group, of the
    user's own name, with no member listed but that user and no other user's primary group.
    (A group with no members listed is not enough: setgid programs, systemd's
    ``SupplementaryGroups=`` and directory services give groups their members unlisted.)"""
    import grp
    import pwd

    try:
        owner = pwd.getpwuid(uid)
        group = grp.getgrgid(gid)
    except KeyError:
        return False
    if owner.pw_gid != gid or group.gr_name != owner.pw_name:
        return False
    if any(member != owner.pw_name for member in group.gr_mem):
        return False
    return all(entry.pw_gid != gid or entry.pw_uid == uid for entry in pwd.getpwall())


def _sync_folder(folder: str) -> None:
    """Make the rename itself durable, where a folder can be opened (not on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a folder; the file itself is synced
    finally:
        os.close(fd)
