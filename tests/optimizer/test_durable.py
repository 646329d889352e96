"""optimizer.durable: atomic rewrites, the JSON-lines journal and the folder lock.

Tests run as root, so permission faults are simulated with monkeypatch (an OSError with the right
errno) rather than chmod.
"""

import errno
import json
import math
import multiprocessing as mp
import os
import pickle
import stat

import pytest

from optimizer import durable
from optimizer.durable import (FolderLock, OutputBusy, OutputError, append_row, atomic_write_bytes,
                               atomic_write_text, check_writable, read_rows)
from profilers.config import SigmastarError

CTX = mp.get_context("spawn")  # the parent has torch loaded (tests/conftest.py): don't fork it


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# --------------------------------------------------------------------------------------------------
# errors


def test_output_error_reasons_and_hints(tmp_path):
    cases = {
        errno.ENOSPC: ("no space left on device", "free some space"),
        errno.EDQUOT: ("disk quota exceeded", "free some space"),
        errno.EACCES: ("permission denied", "fix the permissions"),
        errno.EPERM: ("permission denied", "fix the permissions"),
        errno.EROFS: ("read-only file system", "writable file system"),
        errno.ENOTDIR: ("a parent is a file, not a folder", "remove or rename"),
    }
    for code, (reason, hint) in cases.items():
        e = OutputError(tmp_path / "x", "write", OSError(code, os.strerror(code)))
        assert isinstance(e, SigmastarError)
        assert e.errno == code and e.reason == reason and e.path == tmp_path / "x"
        msg = str(e)
        assert msg.startswith(f"cannot write {tmp_path / 'x'} (write): {reason}. To fix: ")
        assert hint in msg and "--output" in msg
    other = OutputError("f", "write", OSError(errno.EBADF, "Bad file descriptor"))
    assert other.reason == "Bad file descriptor"
    plain = OutputError("f", "write", "something odd")
    assert plain.errno is None and plain.reason == "something odd"
    # survives pickling (multiprocessing re-raises worker errors in the parent)
    back = pickle.loads(pickle.dumps(OutputError("f", "append", OSError(errno.ENOSPC, "x"))))
    assert back.errno == errno.ENOSPC and str(back).startswith("cannot write f (append): no space")
    busy = pickle.loads(pickle.dumps(OutputBusy("d", {"pid": 7, "host": "h", "started": "t"})))
    assert busy.holder["pid"] == 7 and "pid 7 on h" in str(busy)


# --------------------------------------------------------------------------------------------------
# atomic write


def test_atomic_write_replaces_content_and_creates_parents(tmp_path):
    target = tmp_path / "a" / "b" / "report.md"
    assert atomic_write_text(target, "first\n") == target
    assert target.read_text() == "first\n"
    assert atomic_write_text(target, "second ✓\n") == target
    assert target.read_text(encoding="utf-8") == "second ✓\n"
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert _leftovers(target.parent) == []


def test_atomic_write_keeps_mode_of_existing_file(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("x")
    os.chmod(target, 0o640)
    atomic_write_text(target, "y")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    fresh = tmp_path / "new.txt"
    atomic_write_text(fresh, "z")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~durable._umask()


@pytest.mark.parametrize("fault", ["replace", "fsync", "write"])
def test_atomic_write_enospc_keeps_old_content(tmp_path, monkeypatch, fault):
    target = tmp_path / "result.json"
    target.write_text('{"old": true}\n')
    monkeypatch.setattr(durable.os, fault, _enospc)
    with pytest.raises(OutputError) as info:
        atomic_write_text(target, '{"new": true}\n')
    monkeypatch.undo()
    assert target.read_text() == '{"old": true}\n'
    assert _leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]
    msg = str(info.value)
    assert str(target) in msg and "no space left on device" in msg and "free some space" in msg
    assert info.value.errno == errno.ENOSPC and info.value.path == target
    assert isinstance(info.value.__cause__, OSError)


def test_atomic_write_parent_is_a_file(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("i am a file")
    with pytest.raises(OutputError) as info:
        atomic_write_text(blocker / "sub" / "out.txt", "x")
    assert info.value.errno == errno.ENOTDIR
    assert str(blocker / "sub" / "out.txt") in str(info.value)
    assert f"remove or rename the file {blocker}" in str(info.value)
    assert blocker.read_text() == "i am a file"


def test_atomic_write_onto_a_folder(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(OutputError, match="it is a folder, not a file"):
        atomic_write_text(tmp_path / "d", "x")
    assert _leftovers(tmp_path) == []


# --------------------------------------------------------------------------------------------------
# check_writable


def test_check_writable_creates_nested_folders(tmp_path):
    folder = tmp_path / "x" / "y" / "z"
    assert check_writable(folder) == folder
    assert folder.is_dir() and list(folder.iterdir()) == []  # the probe is gone
    assert check_writable(str(folder)) == folder  # existing folder: fine, str accepted


def test_check_writable_parent_is_a_file(tmp_path):
    blocker = tmp_path / "runs"
    blocker.write_text("")
    with pytest.raises(OutputError) as info:
        check_writable(blocker / "today")
    e = info.value
    assert e.path == blocker / "today" and e.errno == errno.ENOTDIR
    assert str(blocker / "today") in str(e) and "a parent is a file, not a folder" in str(e)
    assert str(blocker) in e.hint
    with pytest.raises(OutputError) as info:  # the folder itself is a file
        check_writable(blocker)
    assert info.value.errno == errno.EEXIST and str(blocker) in str(info.value)


@pytest.mark.parametrize("code, reason", [(errno.ENOSPC, "no space left on device"),
                                          (errno.EROFS, "read-only file system"),
                                          (errno.EACCES, "permission denied")])
def test_check_writable_probe_faults(tmp_path, monkeypatch, code, reason):
    def fail(fd):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(durable.os, "fsync", fail)
    with pytest.raises(OutputError, match=reason) as info:
        check_writable(tmp_path / "out")
    monkeypatch.undo()
    assert info.value.path == tmp_path / "out"
    assert list((tmp_path / "out").iterdir()) == []  # probe removed


# --------------------------------------------------------------------------------------------------
# journal


def test_append_and_read_round_trip(tmp_path):
    j = tmp_path / "deep" / "trials.jsonl"
    assert read_rows(j) == ([], [])  # missing file
    rows = [{"i": i, "name": f"t{i}", "score": i / 3, "nested": {"b": [1, 2], "a": None}} for i in range(5)]
    for r in rows:
        append_row(j, r)
    got, problems = read_rows(j)
    assert got == rows and problems == []
    first = j.read_bytes().split(b"\n")[0]
    assert first == json.dumps(rows[0], sort_keys=True).encode()
    assert not (tmp_path / "deep" / "trials.jsonl.torn").exists()


def test_torn_last_line_read_then_repaired(tmp_path):
    j = tmp_path / "j.jsonl"
    append_row(j, {"a": 0})
    with open(j, "ab") as f:
        f.write(b'{"a": 1')  # a writer killed mid-row
    rows, problems = read_rows(j)
    assert rows == [{"a": 0}]
    assert problems == [f"{j} line 2: torn (no newline; an interrupted write), ignored"]

    append_row(j, {"a": 2})
    assert (tmp_path / "j.jsonl.torn").read_bytes() == b'{"a": 1\n'
    assert read_rows(j) == ([{"a": 0}, {"a": 2}], [])

    # a torn line that happens to parse is still ignored; a second repair keeps both fragments
    with open(j, "ab") as f:
        f.write(b'{"a": 3}')
    rows, problems = read_rows(j)
    assert rows == [{"a": 0}, {"a": 2}] and len(problems) == 1 and "line 3: torn" in problems[0]
    append_row(j, {"a": 4})
    assert (tmp_path / "j.jsonl.torn").read_bytes() == b'{"a": 1\n{"a": 3}\n'
    assert read_rows(j) == ([{"a": 0}, {"a": 2}, {"a": 4}], [])


def test_torn_only_fragment_in_empty_journal(tmp_path):
    j = tmp_path / "j.jsonl"
    j.write_bytes(b'{"half')
    assert read_rows(j)[0] == []
    append_row(j, {"ok": True})
    assert j.read_bytes() == b'{"ok": true}\n'
    assert (tmp_path / "j.jsonl.torn").read_bytes() == b'{"half\n'


def test_garbage_lines_are_skipped_with_line_numbers(tmp_path):
    j = tmp_path / "j.jsonl"
    j.write_bytes(b'{"i": 1}\n'
                  b'not json\n'
                  b'\n'
                  b'\xff\xfe\n'
                  b'{"i": 2}\n'
                  b'[1]\n'
                  b'{"i": -1}\n'
                  b'{"i": NaN}\n'
                  b'{"i": 3}\n')

    def validate(row):
        return None if row.get("i", 0) >= 0 else "i must be >= 0"

    rows, problems = read_rows(j, validate=validate)
    assert rows == [{"i": 1}, {"i": 2}, {"i": 3}]
    assert len(problems) == 5
    assert problems[0].startswith(f"{j} line 2: not JSON")
    assert problems[1].startswith(f"{j} line 4: not UTF-8") and "0xff" in problems[1]
    assert problems[2].startswith(f"{j} line 6: an array where a JSON object was expected")
    assert problems[3] == f"{j} line 7: rejected (i must be >= 0), skipped"
    assert problems[4].startswith(f"{j} line 8: not JSON") and "NaN" in problems[4]
    # without validate the rejected row is fine
    assert len(read_rows(j)[0]) == 4


def test_validate_that_raises_is_a_problem_not_a_crash(tmp_path):
    j = tmp_path / "j.jsonl"
    append_row(j, {"x": 1})
    append_row(j, {"y": 2})
    rows, problems = read_rows(j, validate=lambda row: None if row["x"] else "zero")
    assert rows == [{"x": 1}] and len(problems) == 1
    assert problems[0].startswith(f"{j} line 2: rejected (KeyError")


@pytest.mark.parametrize("bad", [{"x": math.nan}, {"x": math.inf}, {"x": {1, 2}}, {"x": object()},
                                 {1: "a", "b": 2}, [1, 2]])
def test_append_rejects_unserializable_rows(tmp_path, bad):
    j = tmp_path / "j.jsonl"
    append_row(j, {"ok": 1})
    before = j.read_bytes()
    with pytest.raises(ValueError):
        append_row(j, bad)
    assert j.read_bytes() == before
    with pytest.raises(ValueError):
        append_row(tmp_path / "never.jsonl", bad)
    assert not (tmp_path / "never.jsonl").exists()


def test_append_enospc_leaves_no_partial_row(tmp_path, monkeypatch):
    j = tmp_path / "j.jsonl"
    append_row(j, {"i": 0})
    real_write = os.write

    def half_then_full(fd, data):  # half the row reaches the disk, then the disk is full
        if len(data) > 4:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(durable.os, "write", half_then_full)
    with pytest.raises(OutputError) as info:
        append_row(j, {"i": 1, "pad": "x" * 100})
    monkeypatch.undo()
    assert info.value.path == j and "no space left on device" in str(info.value)
    assert "(append)" in str(info.value)
    assert read_rows(j) == ([{"i": 0}], [])
    append_row(j, {"i": 2})
    assert read_rows(j) == ([{"i": 0}, {"i": 2}], [])


def test_read_rows_os_error_is_output_error(tmp_path):
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(OutputError) as info:
        read_rows(tmp_path / "dir.jsonl")
    assert info.value.action == "read" and str(info.value).startswith(f"cannot read {tmp_path / 'dir.jsonl'}")


def _append_many(path, worker, n):
    pad = "x" * 1000
    for i in range(n):
        append_row(path, {"w": worker, "i": i, "pad": pad})


def test_concurrent_appends_do_not_interleave(tmp_path):
    j = tmp_path / "j.jsonl"
    procs = [CTX.Process(target=_append_many, args=(str(j), w, 200)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    rows, problems = read_rows(j)
    assert problems == []
    assert len(rows) == 800
    assert sorted((r["w"], r["i"]) for r in rows) == [(w, i) for w in range(4) for i in range(200)]
    assert all(len(r["pad"]) == 1000 for r in rows)
    for w in range(4):  # each writer's rows stay in its order
        assert [r["i"] for r in rows if r["w"] == w] == list(range(200))


# --------------------------------------------------------------------------------------------------
# folder lock


def _hold_lock(folder, ready, done):
    with FolderLock(folder, command="sigmastar search --test"):
        ready.set()
        done.wait(30)


def test_folder_lock_conflict_between_processes(tmp_path):
    folder = tmp_path / "out"
    ready, done = CTX.Event(), CTX.Event()
    child = CTX.Process(target=_hold_lock, args=(str(folder), ready, done))
    child.start()
    try:
        assert ready.wait(30), "child never took the lock"
        with pytest.raises(OutputBusy) as info:
            FolderLock(folder).acquire()
        e = info.value
        assert isinstance(e, SigmastarError)
        assert e.path == folder and e.holder["pid"] == child.pid
        assert e.holder["command"] == "sigmastar search --test" and "T" in e.holder["started"]
        msg = str(e)
        assert str(folder) in msg and f"pid {child.pid}" in msg and e.holder["host"] in msg
        assert "wait for it" in msg and "stop it" in msg and "another output folder" in msg
    finally:
        done.set()
        child.join(30)
    assert child.exitcode == 0
    with FolderLock(folder, command="parent") as lock:
        assert lock.held
        info = json.loads((folder / ".sigmastar.lock").read_text())
        assert info["pid"] == os.getpid() and info["command"] == "parent"
    assert not lock.held and (folder / ".sigmastar.lock").exists()


def test_folder_lock_of_killed_process_is_free(tmp_path):
    folder = tmp_path / "out"
    ready, done = CTX.Event(), CTX.Event()
    child = CTX.Process(target=_hold_lock, args=(str(folder), ready, done))
    child.start()
    assert ready.wait(30)
    child.kill()  # SIGKILL: no cleanup runs
    child.join(30)
    with FolderLock(folder):
        pass


def test_folder_lock_same_process(tmp_path):
    folder = tmp_path / "new" / "out"
    first = FolderLock(folder).acquire()
    try:
        with pytest.raises(RuntimeError):
            first.acquire()
        with pytest.raises(OutputBusy) as info:
            FolderLock(folder).acquire()
        assert info.value.holder["pid"] == os.getpid()
        assert "this very process" in str(info.value)
    finally:
        first.release()
    first.release()  # idempotent
    with FolderLock(folder):
        pass
    lock = FolderLock(folder)
    with lock:
        pass
    with lock:  # reusable after release
        assert lock.held


def test_folder_lock_unwritable_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError) as info:
        FolderLock(blocker / "out").acquire()
    assert info.value.errno == errno.ENOTDIR
