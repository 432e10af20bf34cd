"""The `chariot serve` process itself: its one stdout line, bad flags, shutdown under load,
and recovery of a torn or corrupt segment tail left by a crash."""

import os
import signal
import subprocess
import threading
import time

import pytest

import chariot_client as cc
from conftest import BINARY, READY


def test_ready_line_is_the_only_stdout(server, log_name):
    assert READY.match(server.ready_line)
    assert server.ready_line == (
        f"chariot listening tcp=127.0.0.1:{server.tcp_port} http=127.0.0.1:{server.http_port}"
        f" chariots=127.0.0.1:{server.chariots_port}"
    )
    with server.connect() as c:
        c.create_log(log_name, 1)
        c.publish(log_name, 0, b"x")
    assert server.http.post("/insert", {"message": "m"}).status == 200
    server.stop_clean()
    server.expect_dead = True
    server.drain_thread.join(10)
    assert b"".join(server.extra_stdout) == b"", "logs must go to stderr, not stdout"


@pytest.mark.parametrize("flags", [["--sync", "sometimes"], ["--segment-bytes", "10"], ["--no-such-flag"]])
def test_bad_flags_exit_non_zero(tmp_path, flags):
    if not BINARY.exists():
        pytest.fail(f"server binary {BINARY} not found")
    p = subprocess.run(
        [str(BINARY), "serve", "--data-dir", str(tmp_path / "d"), "--tcp-addr", "127.0.0.1:0",
         "--http-addr", "127.0.0.1:0", "--chariots-addr", "127.0.0.1:0", *flags],
        capture_output=True, timeout=30, stdin=subprocess.DEVNULL,
    )
    assert p.returncode != 0
    assert b"chariot listening" not in p.stdout
    assert p.stderr.strip(), "an error message is expected on stderr"


def test_sigterm_under_load_keeps_every_acknowledged_publish(server, log_name):
    """SIGTERM while producers are publishing: exit 0, every acknowledged publish present
    after restart, nothing duplicated."""
    with server.connect() as c:
        c.create_log(log_name, 1)
    acked = {i: [] for i in range(3)}
    stop = threading.Event()

    def producer(i):
        try:
            with server.connect() as c:
                for seq in range(100_000):
                    if stop.is_set():
                        return
                    v = f"p{i}-{seq}".encode()
                    c.publish(log_name, 0, v)
                    acked[i].append(v)
        except (cc.ProtocolError, cc.RogError, OSError):
            pass  # refused or cut by the shutdown

    threads = [threading.Thread(target=producer, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while sum(map(len, acked.values())) < 150 and time.monotonic() < deadline:
        time.sleep(0.01)
    code = server.stop(signal.SIGTERM)
    stop.set()
    for t in threads:
        t.join(30)
    assert code == 0, server.stderr_tail()
    server.start()
    with server.connect() as c:
        got = c.values(log_name, 0)
    assert len(got) == len(set(got))
    for i in range(3):
        mine = [v for v in got if v.startswith(f"p{i}-".encode())]
        assert mine[: len(acked[i])] == acked[i]
        assert len(mine) - len(acked[i]) in (0, 1)


def _segment_holding(data_dir, marker: bytes):
    hits = [p for p in data_dir.rglob("*.log") if p.is_file() and marker in p.read_bytes()]
    assert len(hits) == 1, hits
    return hits[0]


def _data_end(raw: bytes) -> int:
    """Position just after the last whole batch of a segment file."""
    pos = 0
    while pos + 12 <= len(raw):
        length = int.from_bytes(raw[pos + 8 : pos + 12], "big")
        if length < 46 or pos + 12 + length > len(raw):
            break
        pos += 12 + length
    return pos


def _torn_tails():
    nxt = cc.encode_batch([cc.Record(b"never acknowledged", timestamp=1)], base_offset=3)
    yield "half a batch", nxt[: len(nxt) // 2]
    yield "length prefix only", nxt[:12]
    bad = bytearray(nxt)
    bad[-3] ^= 0xFF
    yield "complete batch, bad CRC", bytes(bad)
    yield "wrong base offset", cc.encode_batch([cc.Record(b"misplaced", timestamp=1)], base_offset=99)
    yield "zeros", b"\x00" * 100


@pytest.mark.parametrize("label,tail", list(_torn_tails()), ids=[l for l, _ in _torn_tails()])
def test_recovery_cuts_a_damaged_tail(server, log_name, label, tail):
    """What a crash can leave after the last acknowledged batch is cut at restart (and kept
    aside as `.truncated-<position>`, docs/format.md); acknowledged records stay, and new
    appends continue at the next offset."""
    marker = f"marker-{log_name}".encode()
    with server.connect() as c:
        c.create_log(log_name, 1)
        c.publish(log_name, 0, marker)
        c.publish_records(log_name, 0, [b"r1", b"r2"])
        c.ack(log_name, 0, "g")
    server.stop(signal.SIGKILL)
    seg = _segment_holding(server.data_dir, marker)
    # The active segment is preallocated (zeros after the data): a torn write lands right
    # after the last whole batch, which is where the data ends.
    size = _data_end(seg.read_bytes())
    with open(seg, "r+b") as f:
        f.seek(size)
        f.write(tail)
    server.start()
    with server.connect() as c:
        assert c.values(log_name, 0) == [marker, b"r1", b"r2"]
        assert c.fetch(log_name, 0, "g") == b"r1"
        assert c.publish_records(log_name, 0, [b"r3"]) == 3
        assert c.values(log_name, 0) == [marker, b"r1", b"r2", b"r3"]
    cut = list(seg.parent.glob(seg.name + ".truncated-*"))
    # Kept up to its last non-zero byte: zeros past it are indistinguishable from the
    # preallocated space, so an all-zero tail is not damage and leaves nothing aside.
    if tail.rstrip(b"\0"):
        assert [p.name for p in cut] == [f"{seg.name}.truncated-{size}"]
        assert cut[0].read_bytes() == tail.rstrip(b"\0")
    else:
        assert cut == []
    # and it all survives another crash
    server.restart(signal.SIGKILL)
    with server.connect() as c:
        assert c.values(log_name, 0) == [marker, b"r1", b"r2", b"r3"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_signal_right_after_ready_line_is_clean(tmp_path, sig):
    """Once the ready line is out, the server must already handle SIGTERM/SIGINT: a
    supervisor (or this suite's fixtures) may stop it at once. The signal is sent the
    moment the line is read, many times, to hit any window between printing the line and
    installing the handlers."""
    if not BINARY.exists():
        pytest.fail(f"server binary {BINARY} not found")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARIOT_")}
    args = [str(BINARY), "serve", "--data-dir", str(tmp_path / "d"),
            "--tcp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--chariots-addr", "127.0.0.1:0"]
    codes = []
    for _ in range(40):
        p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env)
        try:
            line = p.stdout.readline()
            p.send_signal(sig)
            codes.append(p.wait(30))
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stdout.close()
        assert READY.match(line.decode().rstrip("\n")), line
    assert codes == [0] * len(codes), f"exit codes {codes} (-N = killed by signal N)"
