import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.run.lock import JobLock, LockHeld, _start_time

from conftest import scaled

ROOT = Path(__file__).resolve().parent.parent


def write_lock(folder: Path, content, age_s: float = 0.0) -> Path:
    path = folder / ".lock"
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    if age_s:
        t = time.time() - age_s
        os.utime(path, (t, t))
    return path


def record(**kw):
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": "2026-11-30T18:02:11+00:00",
            "start": _start_time(os.getpid()), "token": "theirs", **kw}


def test_acquire_release_and_second_lock_refused(tmp_path):
    lock = JobLock(tmp_path)
    lock.acquire()
    rec = json.loads((tmp_path / ".lock").read_text())
    assert rec["pid"] == os.getpid() and rec["host"] == socket.gethostname() and lock.holder() == rec
    t0 = time.monotonic()
    with pytest.raises(LockHeld) as info:
        JobLock(tmp_path).acquire()
    assert time.monotonic() - t0 < scaled(1)  # at once: no waiting (however busy the machine)
    msg = str(info.value)
    assert isinstance(info.value, BenchError) and "\n" not in msg
    assert f"pid {os.getpid()} on host {socket.gethostname()} since " in msg and " UTC " in msg
    assert str(tmp_path / ".lock") in msg and "remove the lock file" in msg
    lock.release()
    lock.release()  # harmless
    assert not (tmp_path / ".lock").exists() and lock.holder() is None and not lock.lost
    with JobLock(tmp_path) as again:
        assert again.holder()["pid"] == os.getpid()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temp / stale files left behind


def test_other_process_refused_then_taken_over_after_kill(tmp_path, caplog):
    code = ("import sys, time; from bench.lock import JobLock; JobLock(sys.argv[1]).acquire(); "
            "print('locked', flush=True); time.sleep(60)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT)
    try:
        assert proc.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        with pytest.raises(LockHeld, match=f"pid {proc.pid} on host"):
            JobLock(tmp_path).acquire()
        assert time.monotonic() - t0 < scaled(1)  # at once: no waiting (however busy the machine)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
    with caplog.at_level(logging.WARNING, logger="bench.lock"):
        with JobLock(tmp_path) as lock:
            assert lock.holder()["pid"] == os.getpid()
    assert f"pid {proc.pid}" in caplog.text and "stale" in caplog.text


def test_other_host_stale_by_mtime(tmp_path, caplog):
    write_lock(tmp_path, record(host="elsewhere", pid=1234), age_s=3600)
    with caplog.at_level(logging.WARNING, logger="bench.lock"):
        with JobLock(tmp_path) as lock:
            assert lock.holder()["host"] == socket.gethostname()
    assert "host elsewhere" in caplog.text
    write_lock(tmp_path, record(host="elsewhere", pid=1234))
    with pytest.raises(LockHeld, match="pid 1234 on host elsewhere since 2026-11-30 18:02:11 UTC"):
        JobLock(tmp_path).acquire()
    assert json.loads((tmp_path / ".lock").read_text())["host"] == "elsewhere"


@pytest.mark.skipif(_start_time(os.getpid()) is None, reason="needs /proc/<pid>/stat")
def test_pid_reuse_is_stale(tmp_path):
    write_lock(tmp_path, record(start=_start_time(os.getpid()) + 1))
    with JobLock(tmp_path) as lock:
        assert lock.holder()["token"] != "theirs"
    write_lock(tmp_path, record())  # our own pid and start time: alive, so held
    with pytest.raises(LockHeld):
        JobLock(tmp_path).acquire()


def test_heartbeat_touches_and_lost_when_replaced(tmp_path):
    lock = JobLock(tmp_path, heartbeat_s=0.05).acquire()
    path = tmp_path / ".lock"
    os.utime(path, (time.time() - 100,) * 2)
    old = path.stat().st_mtime
    deadline = time.monotonic() + 3
    while path.stat().st_mtime <= old + 50 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert path.stat().st_mtime > old + 50 and not lock.lost
    lock.release()
    assert not path.exists()

    lock = JobLock(tmp_path, heartbeat_s=0.05).acquire()
    tmp = tmp_path / "other"
    tmp.write_text(json.dumps(record(host="elsewhere")))
    os.replace(tmp, path)
    deadline = time.monotonic() + 3
    while not lock.lost and time.monotonic() < deadline:
        time.sleep(0.02)
    assert lock.lost
    lock.release()
    assert json.loads(path.read_text())["token"] == "theirs"


def test_release_keeps_a_replaced_lock_without_heartbeat(tmp_path):
    lock = JobLock(tmp_path, heartbeat_s=3600).acquire()
    write_lock(tmp_path, record(host="elsewhere"))
    lock.release()
    assert lock.lost and json.loads((tmp_path / ".lock").read_text())["token"] == "theirs"


def test_garbage_lock_file(tmp_path):
    write_lock(tmp_path, b'{"host": "node0', age_s=60)
    with JobLock(tmp_path) as lock:
        assert lock.holder()["pid"] == os.getpid()
    write_lock(tmp_path, b'{"host": "node0')
    with pytest.raises(LockHeld, match="being written or is unreadable"):
        JobLock(tmp_path).acquire()
    write_lock(tmp_path, b"")  # an empty file just created with O_EXCL, not yet written
    with pytest.raises(LockHeld):
        JobLock(tmp_path).acquire()


@pytest.mark.parametrize("round_", range(5))
def test_racing_takeover_has_one_winner(tmp_path, round_):
    write_lock(tmp_path, record(host="elsewhere"), age_s=3600)
    barrier, won, refused = threading.Barrier(8), [], []

    def contend():
        lock = JobLock(tmp_path)
        barrier.wait()
        try:
            won.append(lock.acquire())
        except LockHeld as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == 7
    assert all(f"pid {os.getpid()} on host {socket.gethostname()}" in m for m in refused)
    assert won[0].holder()["token"] == won[0]._token
    won[0].release()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_takeover_mutex(tmp_path):
    mutex = tmp_path / ".lock.takeover"
    write_lock(tmp_path, record(host="elsewhere"), age_s=3600)
    mutex.touch()  # another process is taking the stale lock over right now
    t0 = time.monotonic()
    with pytest.raises(LockHeld, match="host elsewhere"):
        JobLock(tmp_path).acquire()
    assert time.monotonic() - t0 < scaled(2)
    os.utime(mutex, (time.time() - 60,) * 2)  # ... or crashed doing so
    with JobLock(tmp_path) as lock:
        assert lock.holder()["pid"] == os.getpid()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
