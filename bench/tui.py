"""The TUI on a login node: its CPU while idle, how fast a key press reaches the screen while pulls stream, how long
it takes to be on screen at all, and the run monitor following a run at 200 notes/s (keys, CPU, memory).

The app runs as a real process in a pseudo-terminal (120x40, TERM=xterm-256color) against stand-in Ollama servers in
processes of their own, so its CPU is measured apart from theirs; a key press is timed from the byte written to the
terminal to the moment the screen it calls for has been drawn.

    python -m bench.tui                 # all three: start-up, idle (60 s), key latency with four pulls streaming
    python -m bench.tui --idle-s 20     # a shorter idle window
    python -m bench.tui --only monitor --notes 100000   # a headless run at ~200 notes/s followed on screen 4
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import statistics
import struct
import sys
import tempfile
import termios
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from tests.standin.standin_ollama import spawn_standin

ROOT = Path(__file__).resolve().parent.parent

CLK = os.sysconf("SC_CLK_TCK")
SERVERS_MARK = b"health every 5 s"
MODELS_MARK = b"sort: name"
LEDGER_MARK = " shown · filter".encode()  # the Ledger screen's title, "N runs shown · filter: …"
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


class Terminal:
    """The app in a pseudo-terminal; everything it writes is kept with the time it arrived."""

    def __init__(self, args: list[str], env: dict[str, str], cols: int = 120, rows: int = 40):
        self.pid, self.fd = os.forkpty()
        if self.pid == 0:  # the child: become the app
            os.chdir(ROOT)
            os.execve(sys.executable, [sys.executable, "-m", "app", *args], env)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.started = time.perf_counter()
        self.lock = threading.Lock()
        self.chunks: list[tuple[float, bytes]] = []
        self.total = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError:
                return
            if not data:
                return
            with self.lock:
                self.chunks.append((time.perf_counter(), data))
                self.total += len(data)

    def mark(self) -> int:
        with self.lock:
            return len(self.chunks)

    def wait_for(self, needle: bytes, since: int = 0, timeout: float = 30.0) -> float:
        """The time at which `needle` (escape sequences ignored) appeared in what was written after mark `since`."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            with self.lock:
                chunks = self.chunks[since:]
            seen = b""
            for t, data in chunks:
                seen += data
                if needle in ANSI.sub(b"", seen):
                    return t
            time.sleep(0.002)
        raise TimeoutError(f"{needle!r} not on screen within {timeout} s")

    def press(self, key: bytes) -> tuple[float, int]:
        since = self.mark()
        t = time.perf_counter()
        os.write(self.fd, key)
        return t, since

    def close(self) -> None:
        try:
            os.write(self.fd, b"q")
            time.sleep(0.5)
            os.kill(self.pid, 9)
        except OSError:
            pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def setup(n_servers: int, pull_seconds: float) -> tuple[list, dict[str, str], Path]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-tui-"))
    # an idle server's model keeps the expiry of its last use (the stand-in's default moves it on every /api/ps,
    # as a server in use does)
    idle_until = datetime.fromtimestamp(time.time() + 1800, UTC).isoformat()
    servers = [spawn_standin(models="llama3", pull_seconds=pull_seconds, expires_at=idle_until)
               for _ in range(n_servers)]
    config = tmp / "config.toml"
    config.write_text("".join(f'[[servers]]\nurl = "{s.url}"\nname = "gpu-{i}"\n\n' for i, s in enumerate(servers)))
    (tmp / "ws" / "experiments").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in ("OLLAMA_HOST", "NO_COLOR")}
    env.update({"NOTES_TUI_CONFIG": str(config), "TERM": "xterm-256color", "PYTHONPATH": str(ROOT)})
    return servers, env, tmp


def app_args(tmp: Path) -> list[str]:
    return ["--workspace", str(tmp / "ws"), "--ledger", str(tmp / "ledger")]


def bench_startup(runs: int) -> None:
    servers, env, tmp = setup(1, 1.0)
    times = []
    try:
        for _ in range(runs):
            term = Terminal(app_args(tmp), env)
            t = term.wait_for(SERVERS_MARK)
            times.append(t - term.started)
            term.wait_for(b"Ollama 0.11.10")
            term.close()
    finally:
        for s in servers:
            s.stop()
    print(f"start-up: `notes-tui` on screen (Servers drawn) in median {statistics.median(times):.2f} s, "
          f"max {max(times):.2f} s over {runs} starts")


def bench_idle(seconds: float) -> None:
    servers, env, tmp = setup(4, 1.0)
    term = Terminal(app_args(tmp), env)
    try:
        term.wait_for(SERVERS_MARK)
        term.wait_for(b"Ollama 0.11.10")
        time.sleep(6)  # past start-up and the first polls of all four
        c0, b0, t0 = cpu_s(term.pid), term.total, time.perf_counter()
        time.sleep(seconds)
        c1, b1, t1 = cpu_s(term.pid), term.total, time.perf_counter()
        share = (c1 - c0) / (t1 - t0)
        print(f"idle: Servers screen with 4 servers up, {seconds:.0f} s: {share * 100:.2f}% of a core "
              f"({(c1 - c0) * 1000:.0f} ms CPU), {(b1 - b0) / (t1 - t0):.0f} bytes/s written to the terminal "
              f"(target < 1%)")
    finally:
        term.close()
        for s in servers:
            s.stop()


def bench_keys(presses: int, profile: str | None = None, pulls: int = 4) -> None:
    servers, env, tmp = setup(4, 600.0)
    term = Terminal(app_args(tmp), env)
    try:
        term.wait_for(SERVERS_MARK)
        time.sleep(2)
        for i in range(pulls):  # a pull on each server: select it on screen 1, pull from screen 2
            if i:
                term.press(b"1")
                time.sleep(0.3)
                term.press(b"\x1b[B")  # down
                time.sleep(0.3)
            t, since = term.press(b"2")
            term.wait_for(MODELS_MARK, since)
            time.sleep(0.3)
            term.press(b"p")
            time.sleep(0.4)
            os.write(term.fd, b"llama3.1:8b\r")
            time.sleep(0.6)
        time.sleep(2)  # all four streaming
        latencies = []
        spy = None
        if profile:  # where the app's time goes meanwhile (py-spy, if installed)
            import subprocess

            spy = subprocess.Popen(["py-spy", "record", "-p", str(term.pid), "-o", profile, "-f", "speedscope",
                                    "-d", str(int(presses * 0.3) + 2), "-r", "200"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
            time.sleep(1)
        c0, t0 = cpu_s(term.pid), time.perf_counter()
        for n in range(presses):
            on_models = pulls > 0  # the pulls were started from screen 2
            key, mark = (b"1", SERVERS_MARK) if (n % 2 == 0) == on_models else (b"2", MODELS_MARK)
            t, since = term.press(key)
            latencies.append(term.wait_for(mark, since) - t)
            time.sleep(0.2)
        c1, t1 = cpu_s(term.pid), time.perf_counter()
        if spy is not None:
            spy.wait(60)
        ms = sorted(x * 1000 for x in latencies)
        print(f"keys: {presses} presses of 1/2 while {pulls} pulls stream progress: median {statistics.median(ms):.1f} ms, "
              f"p90 {ms[int(0.9 * len(ms)) - 1]:.1f} ms, max {ms[-1]:.1f} ms (targets < 50 ms median, < 150 ms max); "
              f"app CPU meanwhile {(c1 - c0) / (t1 - t0) * 100:.1f}% of a core")
    finally:
        term.close()
        for s in servers:
            s.stop()


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def feed_done(ledger: Path) -> int:
    """The run's done count from its live feed (the bench reads it as the monitor does)."""
    feeds = list((ledger / "live").glob("*.jsonl"))
    if not feeds:
        return 0
    done = 0
    with open(feeds[0], "rb") as f:
        f.seek(max(0, feeds[0].stat().st_size - 65536))
        for line in f.read().splitlines():
            if b'"progress"' in line or b'"end"' in line:
                import json

                try:
                    done = json.loads(line)["counts"]["done"]
                except (ValueError, KeyError):
                    pass
    return done


def bench_monitor(notes: int, presses: int) -> None:
    import sqlite3
    import subprocess

    from tests.helpers.support import experiment_toml

    tmp = Path(tempfile.mkdtemp(prefix="bench-monitor-"))
    # 8 slots at 40 ms: 200 notes/s of capacity, the engine kept just above it
    server = spawn_standin(models="llama3", latency=0.04, slots=8, queue=512)
    folder = tmp / "ws" / "experiments"
    folder.mkdir(parents=True)
    conn = sqlite3.connect(folder / "notes.db")
    # keyed as a notes table usually is: a SQLite source pages by its id columns, and without an index on them
    # every page is a scan of the whole table
    conn.execute("CREATE TABLE notes (note_id INTEGER PRIMARY KEY, note_text TEXT)")
    conn.executemany("INSERT INTO notes VALUES (?, ?)",
                     ((i, f"CXR {i}: patchy opacity in the right lower lobe.") for i in range(notes)))
    conn.commit()
    conn.close()
    exp = folder / "pna.toml"
    exp.write_text(experiment_toml(source='kind = "sqlite"\npath = "notes.db"\ntable = "notes"\n'
                                   'id_columns = ["note_id"]\ntext_column = "note_text"', hosts=[server.url],
                                   results='table = "pna_results"\nbatch_size = 500', run="concurrency = 10"))
    ledger = tmp / "ledger"
    config = tmp / "config.toml"
    config.write_text(f'[[servers]]\nurl = "{server.url}"\nname = "gpu-a"\n')
    env = {k: v for k, v in os.environ.items() if k not in ("OLLAMA_HOST", "NO_COLOR")}
    env.update({"NOTES_TUI_CONFIG": str(config), "TERM": "xterm-256color", "PYTHONPATH": str(ROOT)})
    run = subprocess.Popen([sys.executable, "-m", "app", "--run", str(exp), "--ledger", str(ledger)], cwd=ROOT,
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    term = Terminal(["--workspace", str(tmp / "ws"), "--ledger", str(ledger)], env)
    try:
        term.wait_for(SERVERS_MARK)
        t, since = term.press(b"4")
        term.wait_for(b"enter follows", since)
        samples, latencies, cpu_window = [], [], None
        next_sample, keys_at = 0, notes // 5
        while run.poll() is None:
            done = feed_done(ledger)
            if done >= next_sample:
                samples.append((done, rss_mb(term.pid)))
                next_sample += max(1, notes // 10)
            if cpu_window is None and done >= notes // 10:
                cpu_window = (cpu_s(term.pid), time.perf_counter(), done)
            if keys_at is not None and done >= keys_at:
                keys_at = None
                for key, mark in ((b"5", LEDGER_MARK), (b"4", b"enter follows")):  # each screen built once
                    t, since = term.press(key)
                    term.wait_for(mark, since)
                    time.sleep(0.3)
                for n in range(presses):  # screen 5 and back to the monitor while it streams
                    key, mark = (b"5", LEDGER_MARK) if n % 2 == 0 else (b"4", b"enter follows")
                    t, since = term.press(key)
                    latencies.append(term.wait_for(mark, since) - t)
                    time.sleep(0.2)
                cpu_window = (cpu_s(term.pid), time.perf_counter(), feed_done(ledger))  # CPU apart from the keys
            time.sleep(0.5)
        end = (cpu_s(term.pid), time.perf_counter(), feed_done(ledger))
        samples.append((end[2], rss_mb(term.pid)))
        c0, t0, d0 = cpu_window
        ms = sorted(x * 1000 for x in latencies)
        rate = (end[2] - d0) / (end[1] - t0)
        print(f"monitor: a headless run of {notes:,} notes at {rate:.0f} notes/s followed live on screen 4: app CPU "
              f"{(end[0] - c0) / (end[1] - t0) * 100:.1f}% of a core (target < 15%)")
        if ms:
            print(f"monitor: {len(ms)} presses of 5/4 meanwhile: median {statistics.median(ms):.1f} ms, "
                  f"max {ms[-1]:.1f} ms (targets < 50 ms median, < 150 ms max)")
        print("monitor: app RSS by notes done: " + ", ".join(f"{d:,}: {m:.1f} MB" for d, m in samples))
    finally:
        term.close()
        if run.poll() is None:
            run.terminate()
        server.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--idle-s", type=float, default=60.0)
    p.add_argument("--presses", type=int, default=60)
    p.add_argument("--starts", type=int, default=5)
    p.add_argument("--only", choices=["startup", "idle", "keys", "monitor"])
    p.add_argument("--notes", type=int, default=100_000, help="notes of the monitored run")
    p.add_argument("--profile", metavar="FILE", help="py-spy the app during the key presses (speedscope JSON)")
    p.add_argument("--pulls", type=int, default=4, help="pulls streaming while keys are pressed")
    a = p.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the start")
    if a.only in (None, "startup"):
        bench_startup(a.starts)
    if a.only in (None, "idle"):
        bench_idle(a.idle_s)
    if a.only in (None, "keys"):
        bench_keys(a.presses, a.profile, a.pulls)
    if a.only in (None, "monitor"):
        bench_monitor(a.notes, a.presses)


if __name__ == "__main__":
    main()
