"""Durable files for long searches: atomic rewrites, a crash-safe journal and a folder lock.

A search can run for hours and can be killed at any moment (Ctrl-C, an OOM kill, a reboot,
``kill -9``). These primitives keep what it wrote usable afterwards (Linux; standard library
only). Every failure to write is an :class:`OutputError` that names the path and says how to fix
it, so the CLI prints one clean line instead of a traceback.

Guarantees:

* :func:`atomic_write_text` / :func:`atomic_write_bytes` write a temporary file
  (``.<name>.<random>.tmp``) in the same folder, ``fsync`` it, ``os.replace`` it onto the target
  and ``fsync`` the folder. A kill between any two system calls leaves either the old file or the
  new one, never a mix or a half-written file (at worst a stray ``.tmp`` file next to it). On an
  error (disk full, read-only, ...) the temporary file is removed and the old content is untouched.
  The new file keeps the old file's permission bits (or ``0o666`` minus the umask when new).
* :func:`check_writable` proves a folder can take a file (create, fsync, delete a probe) before any
  expensive work starts, so a bad ``--output`` fails in a second, not after an hour.
* :func:`append_row` appends one JSON object per line to a journal under an exclusive ``flock`` on
  the journal itself and ``fsync`` s it before returning: rows from concurrent processes never
  interleave, and a row that :func:`append_row` returned for survives a crash. A last line torn
  by a killed writer (no trailing newline) is repaired on the next append: the fragment is moved
  to ``<journal>.torn`` (appended, so every fragment is kept) and the journal is cut back to its
  last complete line. Rows are written with ``allow_nan=False`` so a NaN never reaches the file.
* :func:`read_rows` never raises on content: bad lines (not UTF-8, not JSON, not an object, rejected
  by ``validate``) and a torn last line are skipped and described, with their line numbers. It
  takes a shared lock, so it never sees a row that is half-way through being appended.
* :class:`FolderLock` keeps two runs from writing one output folder: an exclusive, non-blocking
  ``flock`` on ``<folder>/.sigmastar.lock``, whose content (pid, host, start time, command) names
  the holder in :class:`OutputBusy`. The kernel drops an ``flock`` when its holder exits, however
  it exits, so a lock left by a dead (even ``kill -9``-ed) process is free again at once; the lock
  file stays behind and is only informational. (A process forked while holding the lock shares it;
  :meth:`FolderLock.release` unlocks it for both.)

Usage::

    from optimizer.durable import FolderLock, append_row, atomic_write_text, read_rows

    with FolderLock(out, command="sigmastar search ..."):   # OutputBusy if another run has it
        done, problems = read_rows(out / "trials.jsonl")    # resume: what finished before a crash
        for p in problems:
            print("warning:", p)
        for trial in todo(done):
            append_row(out / "trials.jsonl", run(trial))    # durable once it returns
        atomic_write_text(out / "report.md", render(...))   # old report or new, never half
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional, Union

from profilers.config import SigmastarError

__all__ = [
    "OutputError",
    "OutputBusy",
    "atomic_write_text",
    "atomic_write_bytes",
    "check_writable",
    "append_row",
    "read_rows",
    "FolderLock",
    "LOCK_NAME",
]

PathLike = Union[str, "os.PathLike[str]"]

#: The lock file :class:`FolderLock` creates in the folder it locks.
LOCK_NAME = ".sigmastar.lock"

_REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "a parent is a file, not a folder",
    errno.EISDIR: "it is a folder, not a file",
    errno.EEXIST: "a file is in the way (the path exists but is not a folder)",
    errno.ENOENT: "no such file or folder (and it could not be created)",
    errno.ENAMETOOLONG: "the name is too long",
    errno.EIO: "input/output error (the disk or network share failed)",
    errno.EMFILE: "too many open files",
    errno.ENFILE: "too many open files",
    errno.ENOLCK: "file locks are not supported here",
}

_OTHER = "choose another --output folder"


def _hint(path: Path, code: Optional[int]) -> str:
    if code in (errno.ENOSPC, errno.EDQUOT):
        return f"free some space on that disk, or {_OTHER} on a disk with room"
    if code in (errno.EACCES, errno.EPERM):
        return f"fix the permissions of {path} (or its folder), or {_OTHER} you own"
    if code == errno.EROFS:
        return f"{_OTHER} on a writable file system"
    if code in (errno.ENOTDIR, errno.EEXIST):
        blocker = _blocking_file(path)
        what = f"the file {blocker}" if blocker else "the file that is in the way"
        return f"remove or rename {what}, or {_OTHER}"
    if code == errno.EISDIR:
        return f"remove or rename the folder {path}, or {_OTHER}"
    if code == errno.ENOLCK:
        return f"{_OTHER} on a local disk"
    return f"check the path, or {_OTHER}"


def _blocking_file(path: Path) -> Optional[Path]:
    """The nearest of ``path`` and its parents that exists but is not a folder (best effort)."""
    try:
        for p in (path, *path.parents):
            if p.exists() or p.is_symlink():
                return None if p.is_dir() else p
    except OSError:
        pass
    return None


class OutputError(SigmastarError):
    """An output path cannot be written (or read back): names the path, the reason and a fix.

    ``OutputError(path, action, exc_or_reason)``: ``action`` says what was being done ("write",
    "append", "check", "lock", "read"); ``exc_or_reason`` is the ``OSError`` (its errno picks the
    reason and the hint) or a plain reason string. Attributes: ``path``, ``action``, ``reason``,
    ``errno`` (``None`` when not from an ``OSError``).
    """

    def __init__(self, path: PathLike, action: str, exc_or_reason: Union[BaseException, str]):
        self.path = Path(path)
        self.action = action
        self._arg = exc_or_reason
        if isinstance(exc_or_reason, OSError):
            self.errno = exc_or_reason.errno
            self.reason = _REASONS.get(self.errno) or exc_or_reason.strerror or str(exc_or_reason)
        else:
            self.errno = None
            self.reason = str(exc_or_reason)
        verb = "read" if action == "read" else "write"
        self.hint = _hint(self.path, self.errno)
        super().__init__(f"cannot {verb} {self.path} ({action}): {self.reason}. To fix: {self.hint}.")

    def __reduce__(self):  # picklable across processes (multiprocessing re-raises in the parent)
        return (type(self), (self.path, self.action, self._arg))


class OutputBusy(SigmastarError):
    """Another live process holds the output folder's lock. Attributes ``path`` (the folder) and
    ``holder`` (what the lock file says: ``pid``, ``host``, ``started``, ``command``; may be empty)."""

    def __init__(self, path: PathLike, holder: Optional[dict] = None):
        self.path = Path(path)
        self.holder = dict(holder or {})
        h = self.holder
        pid, host = h.get("pid", "unknown"), h.get("host", "unknown host")
        who = f"pid {pid} on {host}, started {h.get('started', 'at an unknown time')}"
        if h.get("command"):
            who += f", running `{h['command']}`"
        if pid == os.getpid() and host == socket.gethostname():
            who += "; that is this very process"
        super().__init__(
            f"output folder {self.path} is in use by another sigmastar run ({who}). "
            f"To fix: wait for it to finish, stop it, or use another output folder (--output).")

    def __reduce__(self):
        return (type(self), (self.path, self.holder))


# --------------------------------------------------------------------------------------------------
# atomic rewrite


def _umask() -> int:
    """The process umask, read without changing it (``/proc/self/status``; ``0o022`` if unknown)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _fsync_dir(folder: Path) -> None:
    """Make a rename/create in ``folder`` durable (best effort: some file systems refuse)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _unlink_quietly(name: Optional[str]) -> None:
    if name is not None:
        try:
            os.unlink(name)
        except OSError:
            pass


def _temp_file(folder: Path, prefix: str, data: bytes, mode: Optional[int] = None) -> str:
    """A new file in ``folder`` holding ``data``, written and fsynced; its name. Removed again when
    anything fails (the OSError propagates)."""
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=folder)
    try:
        try:
            if mode is not None:
                os.fchmod(fd, mode)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        _unlink_quietly(name)
        raise
    return name


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically and durably; return ``path``.

    Creates missing parent folders. On any ``OSError`` the temporary file is removed, an existing
    ``path`` is left as it was, and :class:`OutputError` naming ``path`` is raised.
    """
    path = Path(path)
    tmp: Optional[str] = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        tmp = _temp_file(path.parent, f".{path.name}.", bytes(data), mode)
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise OutputError(path, "write", exc) from exc
    return path


def atomic_write_text(path: PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """:func:`atomic_write_bytes` of ``text`` encoded with ``encoding``; returns ``path``."""
    return atomic_write_bytes(path, text.encode(encoding))


def check_writable(folder: PathLike) -> Path:
    """Create ``folder`` (and parents) if missing and prove a file can be written there.

    Writes, fsyncs and deletes a small probe file. Any ``OSError`` (a parent that is a regular
    file, a read-only file system, no space, no permission) becomes :class:`OutputError` naming
    ``folder``. Returns ``folder`` as a :class:`~pathlib.Path`.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.unlink(_temp_file(folder, ".sigmastar-probe.", b"sigmastar write check\n"))
    except OSError as exc:
        raise OutputError(folder, "check", exc) from exc
    return folder


# --------------------------------------------------------------------------------------------------
# journal


_CHUNK = 1 << 20


def _encode_row(row: Any) -> bytes:
    if not isinstance(row, dict):
        raise ValueError(f"a journal row must be a dict (a JSON object); got {type(row).__name__}")
    try:
        text = json.dumps(row, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:  # NaN/inf, sets, objects, mixed key types
        raise ValueError(f"journal row cannot be written as strict JSON: {exc}") from exc
    return (text + "\n").encode("utf-8")


def _last_newline_end(fd: int, size: int) -> int:
    """Offset just after the last ``\\n`` in the first ``size`` bytes of ``fd`` (0 if none)."""
    pos = size
    while pos > 0:
        start = max(0, pos - _CHUNK)
        i = os.pread(fd, pos - start, start).rfind(b"\n")
        if i >= 0:
            return start + i + 1
        pos = start
    return 0


def _repair_torn(fd: int, path: Path) -> None:
    """With the journal locked: move a torn last line (no trailing newline) to ``<path>.torn``."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    keep = _last_newline_end(fd, size)
    torn = path.with_name(path.name + ".torn")
    # save the fragment (durably) first, then cut it off: a crash in between only duplicates it
    tfd = os.open(torn, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        pos = keep
        while pos < size:
            chunk = os.pread(fd, min(_CHUNK, size - pos), pos)
            if not chunk:
                break
            _write_all(tfd, chunk)
            pos += len(chunk)
        _write_all(tfd, b"\n")
        os.fsync(tfd)
    finally:
        os.close(tfd)
    os.ftruncate(fd, keep)
    os.fsync(fd)


def append_row(path: PathLike, row: dict) -> None:
    """Append ``row`` as one JSON line to the journal at ``path``, durably and atomically.

    The line is ``json.dumps(row, allow_nan=False, sort_keys=True) + "\\n"``. It is written under an
    exclusive ``flock`` on the journal (so concurrent writers never interleave) and ``fsync`` ed
    before this returns. A torn last line left by a killed writer is first moved to
    ``<path>.torn``. A row that is not a dict or not strict JSON (NaN, inf, non-JSON types) raises
    ``ValueError`` before anything is written; an ``OSError`` becomes :class:`OutputError`.
    """
    path = Path(path)
    line = _encode_row(row)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        created = not path.exists()
        with open(path, "a+b", buffering=0) as f:
            fd = f.fileno()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                _repair_torn(fd, path)
                end = os.fstat(fd).st_size
                try:
                    _write_all(fd, line)
                    os.fsync(fd)
                except OSError:
                    try:  # don't leave a partial row behind (disk full mid-write)
                        os.ftruncate(fd, end)
                    except OSError:
                        pass
                    raise
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        if created:
            _fsync_dir(path.parent)
    except OSError as exc:
        raise OutputError(path, "append", exc) from exc


_JSON_TYPE = {list: "an array", str: "a string", int: "a number", float: "a number",
              bool: "true/false", type(None): "null"}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in strict JSON")


def _parse_line(raw: bytes, validate: Optional[Callable[[dict], Optional[str]]]) -> tuple[Any, Optional[str]]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}), skipped"
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        return None, f"not JSON ({exc.msg} at column {exc.colno}), skipped"
    except ValueError as exc:
        return None, f"not JSON ({exc}), skipped"
    except RecursionError:
        return None, "not JSON (nested too deeply), skipped"
    if not isinstance(obj, dict):
        return None, f"{_JSON_TYPE.get(type(obj), type(obj).__name__)} where a JSON object was expected, skipped"
    if validate is not None:
        try:
            why = validate(obj)
        except Exception as exc:  # a validator tripping on odd content is still bad content
            why = f"{type(exc).__name__}: {exc}"
        if why is not None:
            return None, f"rejected ({why}), skipped"
    return obj, None


def read_rows(path: PathLike, validate: Optional[Callable[[dict], Optional[str]]] = None,
              ) -> tuple[list[dict], list[str]]:
    """Read a journal written by :func:`append_row`: ``(good rows, problems)``.

    A missing file is ``([], [])``. Blank lines are skipped. Every other line must be UTF-8 JSON
    holding an object, and pass ``validate(row)`` (``None`` = ok, else a reason string) when given;
    a line that fails is skipped and described as ``"<path> line <n>: <reason>"``. A last line
    without its newline is torn (an interrupted write) and skipped even if it parses. Never raises
    on content; an ``OSError`` while reading becomes :class:`OutputError` (action ``"read"``).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH)  # not mid-way through someone's append
            data = f.read()
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        raise OutputError(path, "read", exc) from exc
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline (or is empty)
    rows: list[dict] = []
    problems: list[str] = []
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        obj, why = _parse_line(raw, validate)
        if why is None:
            rows.append(obj)
        else:
            problems.append(f"{path} line {n}: {why}")
    if tail.strip():
        problems.append(f"{path} line {len(lines) + 1}: torn (no newline; an interrupted write), ignored")
    return rows, problems


# --------------------------------------------------------------------------------------------------
# folder lock


def _read_holder(fd: int) -> dict:
    """What the lock file says about its holder; retries briefly while it is being (re)written."""
    for attempt in range(5):
        try:
            raw = os.pread(fd, 64 * 1024, 0)
            holder = json.loads(raw.decode("utf-8"))
            if isinstance(holder, dict):
                return holder
        except (OSError, ValueError):
            pass
        time.sleep(0.02 * (attempt + 1))
    return {}


class FolderLock:
    """Exclusive lock on an output folder, so only one sigmastar run writes it at a time.

    ``with FolderLock(folder, command="..."):`` (or :meth:`acquire` / :meth:`release`). Acquiring
    checks the folder is writable (:func:`check_writable`), then takes a non-blocking exclusive
    ``flock`` on ``<folder>/.sigmastar.lock`` and writes ``{pid, host, started, command}`` into it.
    If another open lock holds it, :class:`OutputBusy` names that holder. The kernel releases an
    ``flock`` when its process dies, so a lock left by a dead process is free automatically; the
    file is left in place (its content is only informational). Acquiring twice through the same
    object is a ``RuntimeError``; a second :class:`FolderLock` on the same folder, even in the same
    process, raises :class:`OutputBusy` (``flock`` locks belong to open file descriptions).
    """

    def __init__(self, folder: PathLike, command: str = ""):
        self.folder = Path(folder)
        self.command = command
        self.path = self.folder / LOCK_NAME
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "FolderLock":
        if self._fd is not None:
            raise RuntimeError(f"FolderLock on {self.folder} is already held by this object")
        check_writable(self.folder)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise OutputError(self.path, "lock", exc) from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise OutputBusy(self.folder, _read_holder(fd)) from None
            info = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "command": self.command,
            }
            os.ftruncate(fd, 0)
            _write_all(fd, (json.dumps(info, sort_keys=True) + "\n").encode("utf-8"))
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)  # closing drops the flock if we got it
            raise OutputError(self.path, "lock", exc) from exc
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        """Unlock and close (a no-op when not held). The lock file stays."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            pass
        finally:
            os.close(fd)

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"FolderLock({str(self.folder)!r}, held={self.held})"
