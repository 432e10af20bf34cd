"""Fixtures that run the real `chariot` binary for the black-box suite.

* ``server``: a fresh server per test, in its own temporary data directory.
* ``make_server``: a factory for tests that need extra flags (``--max-record-bytes``,
  ``--sync``, ``--segment-bytes``); every server it starts is stopped after the test.
* ``ChariotServer.restart(sig)`` stops the process with SIGTERM (clean) or SIGKILL
  (crash) and starts it again on the same data directory.

A server must still be alive when its test ends, and must exit 0 on SIGTERM: a crash
caused by a test's bad input therefore fails that test (as a teardown error) even if
the test's own assertions passed.

The binary is ``target/release/chariot`` (``scripts/test`` builds it first), or
``$CHARIOT_BIN``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from chariot_client import Connection, Http

REPO = Path(__file__).resolve().parent.parent
BINARY = Path(os.environ.get("CHARIOT_BIN", REPO / "target" / "release" / "chariot"))
READY = re.compile(r"^chariot listening tcp=(\d+\.\d+\.\d+\.\d+):(\d+) http=(\d+\.\d+\.\d+\.\d+):(\d+)(?: chariots=(\d+\.\d+\.\d+\.\d+):(\d+))?(?: cluster=(\d+\.\d+\.\d+\.\d+):(\d+))?$")
# Liveness bounds only: how long to wait before declaring a hang. No test asserts speed.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


class ServerDied(Exception):
    pass


class ChariotServer:
    """One `chariot serve` process on a data directory that outlives restarts."""

    def __init__(self, data_dir: Path, log_dir: Path, extra_args: list[str] | None = None,
                 prefix: list[str] | None = None, bind_host: str = "127.0.0.1",
                 env: dict[str, str] | None = None):
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.extra_args = list(extra_args or [])
        # A command the server runs under (`ip netns exec <ns>`), and the address its
        # listeners bind there.
        self.prefix = list(prefix or [])
        self.bind_host = bind_host
        # Variables set for this server on top of the cleaned environment.
        self.env = dict(env or {})
        self.proc: subprocess.Popen | None = None
        self.host = "127.0.0.1"
        self.tcp_port = 0
        self.http_port = 0
        self.chariots_port = 0
        self.starts = 0
        self.ready_line = ""

    # ---- lifecycle
    def start(self) -> "ChariotServer":
        if not BINARY.exists():
            pytest.fail(f"server binary {BINARY} not found; run `cargo build --release --bin chariot`")
        self.starts += 1
        self.stderr_path = self.log_dir / f"stderr-{self.starts}.log"
        h = self.bind_host
        args = [
            *self.prefix,
            str(BINARY), "serve",
            "--data-dir", str(self.data_dir),
            "--tcp-addr", f"{h}:0",
            "--http-addr", f"{h}:0", "--chariots-addr", f"{h}:0",
            *self.extra_args,
        ]
        stderr = open(self.stderr_path, "wb")
        # The server reads CHARIOT_* variables as defaults for its flags: keep the caller's
        # environment from changing what is under test.
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHARIOT_")}
        env.update(self.env)
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, env=env)
        stderr.close()
        line = self._read_ready_line()
        m = READY.match(line)
        if not m:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"unexpected ready line {line!r}; stderr:\n{self.stderr_tail()}")
        self.ready_line = line
        self.host = m.group(1)
        self.tcp_port = int(m.group(2))
        self.http_port = int(m.group(4))
        self.chariots_port = int(m.group(6)) if m.group(6) else 0
        # Keep draining stdout so that a chatty server can never block on a full pipe.
        self.extra_stdout: list[bytes] = []
        self.drain_thread = threading.Thread(target=self._drain, args=(self.proc.stdout, self.extra_stdout), daemon=True)
        self.drain_thread.start()
        return self

    def _read_ready_line(self) -> str:
        box: list[bytes] = []
        t = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)
        t.start()
        t.join(START_TIMEOUT)
        if not box:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"server printed no ready line within {START_TIMEOUT}s; stderr:\n{self.stderr_tail()}")
        if not box[0]:
            code = self.proc.wait(STOP_TIMEOUT)
            raise AssertionError(f"server exited ({code}) before it was ready; stderr:\n{self.stderr_tail()}")
        return box[0].decode("utf-8", "replace").rstrip("\r\n")

    @staticmethod
    def _drain(pipe, sink: list) -> None:
        for chunk in iter(lambda: pipe.read1(4096), b""):
            sink.append(chunk)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Sends ``sig`` and waits for the exit; returns the exit code (negative = signal)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"server did not exit within {STOP_TIMEOUT}s of signal {sig}")
        return code

    def stop_clean(self) -> None:
        """SIGTERM, and the exit must be clean (status 0)."""
        code = self.stop(signal.SIGTERM)
        assert code == 0, f"server exited with {code} on SIGTERM; stderr:\n{self.stderr_tail()}"

    def restart(self, sig: int = signal.SIGTERM) -> "ChariotServer":
        """Stops with ``sig`` (SIGTERM must exit 0) and starts again on the same data."""
        assert self.alive(), f"server died before restart; stderr:\n{self.stderr_tail()}"
        if sig == signal.SIGTERM:
            self.stop_clean()
        else:
            self.stop(sig)
        return self.start()

    def stderr_tail(self, n: int = 60) -> str:
        try:
            lines = Path(self.stderr_path).read_text(errors="replace").splitlines()
        except (OSError, AttributeError):
            return "<no stderr>"
        return "\n".join(lines[-n:])

    # ---- clients
    def connect(self, timeout: float = 15.0) -> Connection:
        return Connection(self.host, self.tcp_port, timeout=timeout)

    @property
    def http(self) -> Http:
        return Http(self.host, self.http_port)

    @property
    def addr(self) -> tuple[str, int]:
        return (self.host, self.tcp_port)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


class ServerPool:
    """Starts servers for one test and checks/stops them all afterwards."""

    def __init__(self, request):
        self.request = request
        self.servers: list[ChariotServer] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="chariot-test-"))

    def new(self, *extra_args: str, prefix: list[str] | None = None, bind_host: str = "127.0.0.1",
            env: dict[str, str] | None = None) -> ChariotServer:
        return self.prepare(*extra_args, prefix=prefix, bind_host=bind_host, env=env).start()

    def prepare(self, *extra_args: str, prefix: list[str] | None = None, bind_host: str = "127.0.0.1",
                env: dict[str, str] | None = None) -> ChariotServer:
        """A server of this pool, not started yet."""
        base = self.tmp / f"s{len(self.servers)}"
        data, logs = base / "data", base / "logs"
        data.mkdir(parents=True)
        logs.mkdir(parents=True)
        s = ChariotServer(data, logs, list(extra_args), prefix=prefix, bind_host=bind_host, env=env)
        self.servers.append(s)
        return s

    def finish(self) -> None:
        failed = getattr(self.request.node, "rep_call", None)
        failed = failed is not None and failed.failed
        problems = []
        for s in self.servers:
            if s.proc is None:
                continue
            if failed:
                print(f"--- server stderr (tail) ---\n{s.stderr_tail()}")
            if s.proc.poll() is not None:
                # Stopped on purpose by the test (e.g. a kill followed by no restart)?
                if getattr(s, "expect_dead", False):
                    continue
                problems.append(f"server exited during the test with {s.proc.returncode}; stderr:\n{s.stderr_tail()}")
                continue
            code = s.stop(signal.SIGTERM)
            if code != 0:
                hint = ""
                if code == -signal.SIGTERM:
                    hint = (" (killed by the signal's default action: its handler was not installed"
                            " yet; see test_signal_right_after_ready_line_is_clean)")
                problems.append(f"server exited with {code} on SIGTERM{hint}; stderr:\n{s.stderr_tail()}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        if problems and not failed:
            pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def make_server(request):
    pool = ServerPool(request)
    yield pool.new
    pool.finish()


@pytest.fixture
def make_cluster(request):
    """A factory of clusters of real processes on 127.0.0.1 (see ``cluster.py``); every
    node is checked and stopped after the test like any server."""
    from cluster import Cluster

    pool = ServerPool(request)
    yield lambda n=3, *extra, netns=None, env=None, together=False: Cluster(
        pool, n, list(extra), netns=netns, env=env, together=together)
    pool.finish()


@pytest.fixture
def netns3():
    """Three network namespaces joined by a bridge (see ``netns.py``), removed after the
    test even when it fails; the test is skipped, with the reason printed, where they
    cannot be made. Ask for it before ``make_cluster``, so that the nodes stop first."""
    import netns

    why = netns.available()
    if why is not None:
        pytest.skip(f"no network namespaces here: {why}")
    ns = netns.Netns(3)
    try:
        yield ns
    finally:
        ns.cleanup()


@pytest.fixture
def server(make_server) -> ChariotServer:
    return make_server()


@pytest.fixture
def conn(server):
    c = server.connect()
    yield c
    c.close()


@pytest.fixture
def log_name() -> str:
    return f"log-{uuid.uuid4().hex[:10]}"


def wait_until(pred, timeout: float = 10.0, what: str = "condition"):
    """Polls ``pred`` (a liveness bound, not a speed assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
