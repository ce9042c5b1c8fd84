"""One writer per output, and nothing left running (issue 13).

- Two real ``python -m clipshards.convert`` processes into one OUT: the second fails at once,
  naming the first's host and pid; the first completes and its output verifies.
- A holder killed with SIGKILL leaves its lock file; a rerun takes it over and completes.
- On object storage the lock is a lease object, tested against the real moto (S3) and GCS
  emulator servers on 127.0.0.1: refused while held, taken over when stale, renewed while
  its run lives, a takeover noticed by the holder, and racing creators end with one holder.
- Pool workers die with their parent: after ``kill -9`` of the parent they are gone in 5 s.
- An OUT that is a file, or read-only, gets a message saying so (status 2), not "rerun to resume".
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clipshards.convert import convert
from clipshards.convert.cli import main
from clipshards.convert.errors import OutputLocked
from clipshards.convert.lock import LEASE_NAME, LOCK_NAME, Lease
from clipshards.convert.storage import Location
from clipshards.convert.synth import VideoSpec, make_dataset
from reference import run_command, tree_bytes
from servers import CONVERT_KW, assert_same_conversion, gcs_server, s3_server  # noqa: F401  (fixtures)
from servers import tree_bytes as store_bytes

ARGS = ["-T", "4", "-S", "2", "--layout", "clips", "--shard-size", "200KB", "--no-progress", "-q", "--workers", "1", "--yes"]
HOST = socket.gethostname()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("concurrent") / "ds"
    make_dataset(root, classes=("a", "b"), videos_per_class=2, spec=VideoSpec(frames=40))
    return root


@pytest.fixture(scope="module")
def uninterrupted(dataset, tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("whole") / "out"
    proc = run_command([dataset, out, *ARGS])
    assert proc.returncode == 0, proc.stderr
    return tree_bytes(out)


def _start(dataset: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "clipshards.convert", str(dataset), str(out), *ARGS],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def _holding(proc: subprocess.Popen, out: Path, timeout: float = 120) -> dict:
    """Wait until ``proc`` holds the lock on ``out/train`` (its pid in the lock file), then
    freeze it there (SIGSTOP to its process group); returns what the lock file says."""
    lock = out / "train" / LOCK_NAME
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended before it was seen holding the lock: {proc.stderr.read()}"
        try:
            holder = json.loads(lock.read_bytes())
        except (FileNotFoundError, ValueError):
            holder = {}
        if holder.get("pid") == proc.pid:
            os.killpg(proc.pid, signal.SIGSTOP)
            return holder
        time.sleep(0.002)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError("the run never took the lock")


def test_second_run_into_one_out_fails_at_once_naming_the_holder(dataset, uninterrupted, tmp_path):
    out = tmp_path / "out"
    first = _start(dataset, out)
    try:
        holder = _holding(first, out)
        assert holder["host"] == HOST
        started = time.monotonic()
        second = run_command([dataset, out, *ARGS], timeout=120)
        waited = time.monotonic() - started
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    assert second.returncode == 1, second.stderr
    assert f"host {HOST}, pid {first.pid}" in second.stderr, second.stderr
    assert "resume" not in second.stderr
    assert waited < 60, "the second run waited for the lock instead of failing at once"
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert tree_bytes(out) == uninterrupted  # the first run's output, whole; no lock file left
    assert main(["verify", str(out), "--no-progress", "--quiet"]) == 0


def test_lock_of_a_killed_run_is_taken_over(dataset, uninterrupted, tmp_path):
    out = tmp_path / "out"
    first = _start(dataset, out)
    _holding(first, out)
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate()
    lock = out / "train" / LOCK_NAME
    assert json.loads(lock.read_bytes())["pid"] == first.pid  # left behind by the killed run
    proc = run_command([dataset, out, *ARGS])
    assert proc.returncode == 0, proc.stderr
    assert tree_bytes(out) == uninterrupted


def test_out_that_is_a_file_is_named(dataset, tmp_path):
    for out, blocker in ((tmp_path / "out", tmp_path / "out"), (tmp_path / "out2", tmp_path / "out2" / "train")):
        blocker.parent.mkdir(exist_ok=True)
        blocker.write_text("not a folder")
        proc = run_command([dataset, out, *ARGS])
        assert proc.returncode == 2, proc.stderr
        assert f"{str(blocker)!r} is a file, not a folder" in proc.stderr, proc.stderr
        assert "resume" not in proc.stderr
        assert blocker.read_text() == "not a folder"


def test_read_only_out_is_named(dataset, uninterrupted, tmp_path):
    """A read-only OUT: refused with a message saying so (as root, a read-only bind mount in a
    private mount namespace; otherwise a folder without write permission). One that already
    holds this conversion needs no lock: "nothing to do", as on a writable disk."""
    out = tmp_path / "out"
    out.mkdir()
    done = tmp_path / "done"
    assert run_command([dataset, done, *ARGS]).returncode == 0
    command = [sys.executable, "-m", "clipshards.convert", str(dataset)]
    if os.geteuid() == 0:
        script = 'mount --bind -o ro "$1" "$1" && mount --bind -o ro "$2" "$2" && shift 2 && exec "$@"'
        runs = [["unshare", "--mount", "sh", "-c", script, "sh", str(out), str(done), *command, str(o), *ARGS]
                for o in (out, done)]
        why, stopped = "the filesystem is read-only", "mount:"
    else:
        os.chmod(out, 0o555)
        os.chmod(done / "train", 0o555)
        runs = [[*command, str(o), *ARGS] for o in (out, done)]
        why, stopped = "permission denied", "\0"
    try:
        refused, finished = (subprocess.run(r, capture_output=True, text=True, timeout=300) for r in runs)
    finally:
        os.chmod(out, 0o755)
        os.chmod(done / "train", 0o755)
    if stopped in refused.stderr or "unshare:" in refused.stderr:
        pytest.skip(f"no read-only mount here: {refused.stderr.strip()}")
    assert refused.returncode == 2, refused.stderr
    assert f"cannot write the output {out / 'train'}: {why}" in refused.stderr, refused.stderr
    assert "resume" not in refused.stderr
    assert finished.returncode == 0, finished.stderr
    assert tree_bytes(done) == uninterrupted


# -- pool workers die with their parent ----------------------------------------------------

POOL_SCRIPT = """
import sys, threading, time
from clipshards.convert.engine import LocalEngine

if __name__ == "__main__":
    if sys.argv[1] == "spawn":  # a second thread: the pool spawns its workers (engine.start_method)
        threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
    for _ in LocalEngine(2).map_ordered(time.sleep, [3600, 3600, 3600]):
        pass
"""


def _children(pid: int) -> set[int]:
    found = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as fh:
            found |= {int(c) for c in fh.read().split()}
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pool_workers_die_with_their_parent(tmp_path, method):
    """Two workers each busy on an hour-long task; ``kill -9`` of the parent: gone within 5 s."""
    script = tmp_path / "pool.py"
    script.write_text(POOL_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script), method], start_new_session=True)
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while len(workers) < 2 and time.monotonic() < deadline:
            assert parent.poll() is None, "the pool script died"
            workers = {c for c in _children(parent.pid) if open(f"/proc/{c}/cmdline", "rb").read().count(b"\0") > 1}
            time.sleep(0.05)
        assert len(workers) >= 2, workers
        time.sleep(1.0)  # the workers are inside their tasks now
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 5
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [w for w in workers if _alive(w)], "pool workers still running 5 s after their parent was killed"
    finally:
        for w in workers:
            try:
                os.kill(w, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if parent.poll() is None:
            parent.kill()


# -- the lease on object storage ----------------------------------------------------------


@pytest.fixture(params=["s3", "gs"])
def store(request):
    """``(scheme, server)`` for each object store."""
    server = request.getfixturevalue("s3_server" if request.param == "s3" else "gcs_server")
    return request.param, server


def _url(store) -> str:
    scheme, server = store
    return f"{scheme}://{server.make_bucket()}/conv"


def _loc(store) -> Location:
    return Location(_url(store), store[1].storage_options()).child("train")


def _put_lease(loc: Location, **lease) -> None:
    loc.fs.pipe_file(loc.path(LEASE_NAME), json.dumps(lease).encode())


def _lease_of(loc: Location) -> dict:
    return json.loads(loc.read_bytes(LEASE_NAME))


def test_lease_refuses_a_second_holder_naming_it(store):
    loc = _loc(store)
    with Lease(loc, settle=0.05) as held:
        assert _lease_of(loc)["token"] == held.token
        with pytest.raises(OutputLocked, match=f"host {HOST}, pid {os.getpid()}"):
            Lease(loc, settle=0.05)
        assert _lease_of(loc)["token"] == held.token
    assert not loc.exists(LEASE_NAME)
    Lease(loc, settle=0.05).release()  # free again


def test_conversion_refused_while_another_run_holds_the_lease(store, tiny_dataset):
    url, (_, server) = _url(store), store
    loc = Location(url, server.storage_options()).child("train")
    with Lease(loc, settle=0.05):
        with pytest.raises(OutputLocked, match=f"host {HOST}, pid {os.getpid()}"):
            convert(tiny_dataset, url, workers=1, storage_options=server.storage_options(), **CONVERT_KW)
        assert loc.listdir() == [LEASE_NAME]  # the refused run wrote nothing


def test_stale_leases_are_taken_over(store, tiny_dataset, tiny_converted):
    """Expired (its run lost the store or died elsewhere), or of a process of this host that is gone."""
    loc = _loc(store)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for stale in (dict(host="elsewhere", pid=1, token="x", expires=time.time() - 1),
                  dict(host=HOST, pid=int(gone.stdout), token="y", expires=time.time() + 3600)):
        _put_lease(loc, **stale)
        with Lease(loc, settle=0.05) as held:
            assert _lease_of(loc)["token"] == held.token
    # a whole conversion over a killed run's lease
    url, server = _url(store), store[1]
    _put_lease(Location(url, server.storage_options()).child("train"), host=HOST, pid=int(gone.stdout), token="z",
               expires=time.time() + 3600)
    report = convert(tiny_dataset, url, workers=1, storage_options=server.storage_options(), **CONVERT_KW)
    assert report.clips > 0
    assert_same_conversion(store_bytes(tiny_converted), store_bytes(url, server.storage_options()))


def test_lease_is_renewed_while_its_run_lives(store):
    loc = _loc(store)
    with Lease(loc, ttl=0.6, settle=0.05) as held:
        first = _lease_of(loc)["expires"]
        time.sleep(1.0)  # longer than the ttl: a lease not renewed would have expired
        assert held.lost is None
        assert first < _lease_of(loc)["expires"] and _lease_of(loc)["expires"] > time.time()
        with pytest.raises(OutputLocked):
            Lease(loc, settle=0.05)
        held.check()


def test_a_lease_taken_over_is_noticed_by_its_holder(store):
    loc = _loc(store)
    held = Lease(loc, ttl=0.4, settle=0.05)
    _put_lease(loc, host="elsewhere", pid=7, token="other", expires=time.time() + 60)
    deadline = time.monotonic() + 10
    while held.lost is None and time.monotonic() < deadline:
        time.sleep(0.02)
    with pytest.raises(OutputLocked, match=r"taken over by another run \(host elsewhere, pid 7"):
        held.check()
    held.release()
    assert _lease_of(loc)["token"] == "other"  # the new holder's lease is left alone


class _LateReader(Lease):
    """A run that read "no lease" just before another run created one (a race, made certain)."""

    def _read(self):
        if not getattr(self, "_raced", False):
            self._raced = True
            return None
        return super()._read()


def test_racing_creators_end_with_one_holder(store):
    """S3 refuses the second conditional create (If-None-Match: *); the GCS emulator ignores
    ifGenerationMatch, so the later write wins and the first holder finds out at its next renewal."""
    loc = _loc(store)
    first = Lease(loc, ttl=0.4, settle=0.05)
    try:
        second = _LateReader(loc, ttl=0.4, settle=0.05)
    except OutputLocked as exc:
        assert f"pid {os.getpid()}" in str(exc)
        second = None
    time.sleep(0.6)
    holders = [lease for lease in (first, second) if lease is not None and lease.lost is None]
    assert len(holders) == 1 and _lease_of(loc)["token"] == holders[0].token
    if store[0] == "s3":
        assert second is None
    for lease in (first, second):
        if lease is not None:
            lease.release()
    assert not loc.exists(LEASE_NAME)
