"""Where LoRA Lab keeps its files.

Everything the app writes (runs, downloaded datasets and weights) lives under one folder, so a
teacher can find it, copy it to a classroom laptop, or delete it. Shipped files (pretrained
weights, model cards) live in the repository's `assets/` folder.
"""

import errno
import os
import socket
import stat
from pathlib import Path
from urllib.parse import urlsplit

ROOT: Path = Path(__file__).resolve().parents[2]  # the checkout: core/common/paths.py
ASSETS: Path = ROOT / "assets"
# Bytes in one name of a path (a folder's or a file's): Linux's file systems allow no more, and
# nor do macOS's or Windows'. A longer one is refused before the file system is asked.
NAME_MAX = 255


class OfflineError(RuntimeError):
    """A download was needed and failed.

    `str(error)` is the student-facing message: what was missing, where it was looked for and
    how to put it there. The UI shows it as-is instead of a traceback.
    """


class FolderError(ValueError):
    """A folder LoRA Lab keeps its files in cannot be made (the path is a file, say);
    `str(error)` names the folder, the setting that chose it and what to do."""


def home() -> Path:
    """The app's folder: `$LORA_LAB_HOME`, or `~/.lora-lab`; created on first use."""
    return _folder(os.environ.get("LORA_LAB_HOME") or Path.home() / ".lora-lab", "LORA_LAB_HOME")


def data_dir() -> Path:
    """Where downloaded datasets and weights go: `$LORA_LAB_DATA`, or `home()/data`."""
    configured = os.environ.get("LORA_LAB_DATA")
    return _folder(configured or home() / "data", "LORA_LAB_DATA")


def _folder(path: str | Path, setting: str) -> Path:
    try:
        return make_folder(path)
    except PathError as error:
        raise FolderError(
            f"LoRA Lab cannot keep its files in {error.path} ({error.why}): set {setting} to a "
            "folder it can write to"
        ) from None


class PathError(ValueError):
    """A path that cannot be used as asked: `why` says what is wrong with it, in words (which
    part of it is a file, which name is too long), `path` is the path; str(error) is both."""

    def __init__(self, path: str | Path, why: str) -> None:
        super().__init__(f"cannot use {path}: {why}")
        self.path, self.why = path, why


def check_names(path: str | Path) -> Path:
    """`path` as a Path, unless a name in it is longer than a file system allows (PathError):
    asked about, such a path is an OSError that even `Path.exists` raises."""
    path = Path(path)
    for name in path.parts:
        if len(os.fsencode(name)) > NAME_MAX:
            raise PathError(path, _too_long(name))
    return path


def make_folder(path: str | Path) -> Path:
    """The folder `path`, made with its parents if missing; PathError saying why if it cannot
    be (a part of it is a file, a name is too long, the file system is read-only, …)."""
    path = check_names(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PathError(path, why(error, path)) from None
    return path


def why(error: OSError, path: str | Path) -> str:
    """Why `path` could not be used, from the OSError that said so: in words, naming the part
    of the path that is a file where a folder must be, rather than "File exists"."""
    path = Path(path)
    if error.errno in (errno.ENOTDIR, errno.EEXIST) and (blocker := _file_in(path)):
        return f"{blocker} is a file, not a folder"
    if error.errno == errno.ENAMETOOLONG:
        return _too_long(max(path.parts, key=lambda name: len(os.fsencode(name))))
    if error.errno == errno.ELOOP:
        return "it is a symbolic link that leads back to itself (a loop)"
    if error.errno == errno.EROFS:
        return "it is on a read-only file system"
    return error.strerror or str(error)


def _file_in(path: Path) -> Path | None:
    """The first of `path` and its parents, from the root down, that exists and is no folder."""
    for part in [*reversed(path.parents), path]:
        try:
            if not stat.S_ISDIR(part.stat().st_mode):
                return part
        except OSError:
            return None
    return None


def _too_long(name: str) -> str:
    cut = name if len(name) <= 24 else f"{name[:12]}…{name[-8:]}"
    return (
        f"the name {cut!r} in it is {len(os.fsencode(name))} bytes long, more than the "
        f"{NAME_MAX} a file system allows"
    )


def read_regular(path: str | Path, limit: int = -1) -> bytes:
    """The bytes of the regular file at `path` (at most `limit` of them). Anything else is
    refused at once with an OSError that says so: opening a named pipe (FIFO) to read waits for
    a writer, forever if none comes, and a device can be endless. This is the one place a file
    named by a user, or planted in the store, is opened to read.

    The file is opened without waiting (O_NONBLOCK: a pipe opens at once), checked, and only
    then read, blocking as usual."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(errno.EINVAL, "it is not a regular file", str(path))
        os.set_blocking(descriptor, True)
        file = os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
    with file:
        return file.read(limit)


def require_network(url: str, offline_message: str, timeout: float = 3.0) -> None:
    """Raise `OfflineError(offline_message)` unless `url`'s server answers within `timeout` s.

    Library downloaders can wait minutes for a network that silently drops packets; a short
    connection test first means an offline classroom gets the explanation at once. Setting
    `LORA_LAB_OFFLINE=1` skips downloads altogether.
    """
    if os.environ.get("LORA_LAB_OFFLINE") == "1":
        raise OfflineError(offline_message)
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as error:
        raise OfflineError(offline_message) from error
