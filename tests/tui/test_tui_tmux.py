"""notes-tui in a real terminal: tmux runs it, the test presses keys and reads the screen back — screens 1 and 2, the
demo experiment run from screen 3 to its limit with the real model, and the faults of a terminal over SSH: resized
to 40x12 and back during a run, SIGHUP (the connection dropped) while a run it started goes on, SIGTERM putting the
terminal back as it was."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.support import ROOT, need
from tests.helpers.tmuxkit import Tmux
from tests.helpers.tuikit import write_config
from tests.helpers.wait import wait_for
from tests.standin.standin_ollama import spawn_standin

RATE = re.compile(r"· (\d[\d.,]*|-) notes/s")  # the followed run's rate on its progress line, not the sparkline's scale

# a real terminal: key presses and screen reads are timed, and the model run needs both cores; seconds each
pytestmark = [pytest.mark.serial, pytest.mark.slow]


def app_command(tmp_path, env: dict[str, str], exec_: bool = True) -> str:
    """The shell command that runs the app; exec_=False keeps the shell as the app's parent."""
    env = {"TERM": "xterm-256color", "PYTHONPATH": str(ROOT), **env}
    return (f"cd {shlex.quote(str(ROOT))} && {'exec ' if exec_ else ''}env "
            + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
            + f" {shlex.quote(sys.executable)} -m app --workspace {shlex.quote(str(tmp_path / 'ws'))}"
            + f" --ledger {shlex.quote(str(tmp_path / 'ledger'))}")


def test_the_app_in_tmux_switches_screens_with_1_and_2_and_quits(tmp_path):
    need(shutil.which("tmux") is not None, "tmux is not installed (apt-get install tmux; .ci/run does it)")
    server = spawn_standin(models="llama3,qwen2.5:7b")
    tmux = Tmux(f"notes-tui-test-{os.getpid()}")
    try:
        config = write_config(tmp_path / "config.toml", [(server.url, "gpu-a")])
        (tmp_path / "ws" / "experiments").mkdir(parents=True)
        env = {"NOTES_TUI_CONFIG": str(config), "TERM": "xterm-256color", "PYTHONPATH": str(ROOT)}
        command = " ".join(
            [f"{k}={shlex.quote(v)}" for k, v in env.items()]
            + [shlex.quote(sys.executable), "-m", "app", "--workspace", shlex.quote(str(tmp_path / "ws")),
               "--ledger", shlex.quote(str(tmp_path / "ledger"))])
        tmux("new-session", "-d", "-s", "t", "-x", "80", "-y", "24", f"cd {shlex.quote(str(ROOT))} && {command}")
        shown = tmux.wait_for("1 Servers", "gpu-a", "Ollama 0.11.10")
        assert "a Add server" in shown and "q Quit" in shown
        assert len(shown.splitlines()[0]) <= 80
        tmux("send-keys", "-t", "t", "2")
        shown = tmux.wait_for("Models on gpu-a", "llama3:latest", "qwen2.5:7b", "of 75 GB")
        assert "p Pull" in shown
        tmux("send-keys", "-t", "t", "1")
        tmux.wait_for("Servers  1 known")
        tmux("send-keys", "-t", "t", "q")
        deadline = time.monotonic() + 10
        while tmux.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not tmux.alive(), tmux.screen()
    finally:
        tmux("kill-server", check=False)
        server.stop()


def experiment_with_notes(tmp_path, url: str, n: int) -> Path:
    import sqlite3

    from tests.helpers.support import experiment_toml

    folder = tmp_path / "ws" / "experiments"
    folder.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(folder / "notes.db")
    conn.execute("CREATE TABLE notes (note_id INTEGER, note_text TEXT)")
    conn.executemany("INSERT INTO notes VALUES (?, ?)", [(i, f"CXR {i}") for i in range(n)])
    conn.commit()
    conn.close()
    exp = folder / "pna.toml"
    exp.write_text(experiment_toml(source='kind = "sqlite"\npath = "notes.db"\ntable = "notes"\n'
                                   'id_columns = ["note_id"]\ntext_column = "note_text"', hosts=[url],
                                   results='table = "pna_results"\nbatch_size = 20'))
    return exp


def rows_in(exp: Path) -> int:
    import sqlite3

    conn = sqlite3.connect(exp.parent / "notes.db")
    try:
        return conn.execute("SELECT COUNT(*) FROM pna_results").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


@pytest.mark.slow
def test_the_demo_run_from_the_experiments_screen_reaches_its_limit(tmp_path):
    need(shutil.which("tmux") is not None, "tmux is not installed (apt-get install tmux; .ci/run does it)")
    ws = tmp_path / "ws" / "experiments"
    (ws / "data").mkdir(parents=True)
    shutil.copy(ROOT / "experiments" / "demo.toml", ws / "demo.toml")
    shutil.copy(ROOT / "experiments" / "data" / "demo_notes.csv", ws / "data" / "demo_notes.csv")
    tmux = Tmux(f"notes-tui-test-{os.getpid()}")
    try:
        tmux.start(app_command(tmp_path, {"NOTES_TUI_CONFIG": str(tmp_path / "config.toml")}), size=(120, 40))
        tmux.wait_for("1 Servers")
        tmux("send-keys", "-t", "t", "3")
        tmux.wait_for("demo-pneumonia-v1", "llamacpp", "51")  # valid, 51 notes to do
        tmux("send-keys", "-t", "t", "g")
        tmux.wait_for("Run demo.toml here")
        tmux("send-keys", "-t", "t", "3", "Enter")
        shown = tmux.wait_for("3/3 (100.0%)", "completed", timeout=240)
        assert "done 3 · valid 3" in shown and "response=" in shown
        tmux("send-keys", "-t", "t", "5")
        tmux.wait_for("Ledger  1 run shown", "completed", "3/3")
    finally:
        tmux("kill-server", check=False)


def test_resized_to_40x12_and_back_during_a_run_then_sighup_leaves_the_run_going(tmp_path):
    need(shutil.which("tmux") is not None, "tmux is not installed (apt-get install tmux; .ci/run does it)")
    server = spawn_standin(latency=0.05, slots=4)
    tmux = Tmux(f"notes-tui-test-{os.getpid()}")
    try:
        exp = experiment_with_notes(tmp_path, server.url, 800)
        # COLUMNS and LINES exported (a shell rc file does it; GNU readline in a parent does it unasked) must not pin
        # the app to the size it started at
        tmux.start(app_command(tmp_path, {"NOTES_TUI_CONFIG": str(tmp_path / "config.toml"),
                                          "COLUMNS": "80", "LINES": "24"}))
        tmux.wait_for("1 Servers")
        tmux("send-keys", "-t", "t", "3")
        tmux.wait_for("pna-test", "800")
        tmux("send-keys", "-t", "t", "g")
        tmux.wait_for("Run pna.toml here")
        tmux("send-keys", "-t", "t", "Enter")
        tmux.wait_for("notes/s", "ETA")
        tmux.wait_gone("started; it goes on")  # the notice that the run outlives the app, gone after a moment
        tmux("resize-window", "-t", "t", "-x", "40", "-y", "12")
        # laid out anew at 40x12, not drawn at 80x24 and cut by the terminal: the header on line 1, the key bar on 12
        def laid_out_small() -> bool:
            lines = tmux.screen().splitlines()
            return len(lines) == 12 and "notes-tui" in lines[0] and "s Stop run" in lines[11]

        wait_for(laid_out_small, 20, "the app laid out at 40x12", every=0.1)
        tmux("resize-window", "-t", "t", "-x", "80", "-y", "24")
        shown = tmux.wait_for("4 Runs", "notes/s")
        assert "Traceback" not in shown
        app_pid = int(tmux.pane("pane_pid"))
        os.kill(app_pid, signal.SIGHUP)  # what a dropped SSH connection sends
        wait_for(lambda: tmux.pane("pane_dead") == "1", 20, "the app to end", every=0.1)
        assert rows_in(exp) < 800  # the app is gone while its run is not done
        wait_for(lambda: rows_in(exp) == 800, 60, "the run to finish without the app", every=0.1)
    finally:
        tmux("kill-server", check=False)
        server.stop()


def test_sigterm_puts_the_terminal_back(tmp_path):
    need(shutil.which("tmux") is not None, "tmux is not installed (apt-get install tmux; .ci/run does it)")
    (tmp_path / "ws" / "experiments").mkdir(parents=True)
    tmux = Tmux(f"notes-tui-test-{os.getpid()}")
    try:
        # the exit status is written by the shell that waits for the app: tmux's own (#{pane_dead_status}) is read on
        # SIGCHLD, which tmux 3.3a at times misses, leaving the app a zombie and the status empty
        status = tmp_path / "status"
        app = app_command(tmp_path, {"NOTES_TUI_CONFIG": str(tmp_path / "config.toml")}, exec_=False)
        tmux.start(f"{app}; echo $? > {shlex.quote(str(status))}")
        tmux.wait_for("1 Servers")
        assert tmux.pane("alternate_on") == "1" and tmux.pane("mouse_any_flag") == "1"  # the app's terminal modes
        shell = int(tmux.pane("pane_pid"))
        children = Path(f"/proc/{shell}/task/{shell}/children").read_text().split()
        assert len(children) == 1, children
        os.kill(int(children[0]), signal.SIGTERM)
        wait_for(lambda: status.exists() and status.read_text().strip(), 20, "the app to end", every=0.1)
        assert status.read_text().strip() == "143"
        wait_for(lambda: tmux.pane("pane_dead") == "1", 20, "the shell to end", every=0.1)
        assert tmux.pane("alternate_on") == "0" and tmux.pane("mouse_any_flag") == "0"  # put back as it was
    finally:
        tmux("kill-server", check=False)


def test_an_app_whose_terminal_vanishes_does_not_linger(tmp_path):
    """tmux gone (the SSH connection cut) while the monitor streams a run: SIGHUP, and every write to the terminal
    fails. The app must end; the run goes on."""
    need(shutil.which("tmux") is not None, "tmux is not installed (apt-get install tmux; .ci/run does it)")
    server = spawn_standin(latency=0.02, slots=8)
    tmux = Tmux(f"notes-tui-test-{os.getpid()}")
    try:
        exp = experiment_with_notes(tmp_path, server.url, 3000)
        try:
            tmux.start(app_command(tmp_path, {"NOTES_TUI_CONFIG": str(tmp_path / "config.toml")}))
            tmux.wait_for("1 Servers")
            tmux("send-keys", "-t", "t", "3")
            tmux.wait_for("pna-test", "3,000")
            tmux("send-keys", "-t", "t", "g")
            tmux.wait_for("Run pna.toml here")
            tmux("send-keys", "-t", "t", "Enter")
            tmux.wait_for("notes/s", "ETA")
            pid = int(tmux.pane("pane_pid"))
        finally:
            tmux("kill-server", check=False)

        def gone() -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split()[2] == "Z"  # ended, not yet reaped

        wait_for(gone, 15, "the app to end with its terminal", every=0.1)
        wait_for(lambda: rows_in(exp) == 3000, 90, "the run to finish without the app", every=0.1)
    finally:
        server.stop()


def test_a_run_whose_server_is_killed_says_it_waits_and_until_when_then_goes_on_when_it_returns(tmp_path):
    """Issue 24.1: the only server of a run started from the app is killed mid-run. Within 5 s the Runs screen says
    the run waits for that server, since when, the error and when it gives up (not a rate fading to nothing); the
    server started again on the same port, the wait clears and the run finishes every note."""
    need(shutil.which("tmux") is not None, "tmux is not installed (apt-get install tmux; .ci/run does it)")
    server = spawn_standin(latency=0.05, slots=4)
    port = int(server.url.rsplit(":", 1)[1])
    host = server.url.split("://", 1)[1]
    tmux = Tmux(f"notes-tui-test-{os.getpid()}")

    def joined() -> str:  # a long line wraps at 80 columns: read the screen as one line
        return " ".join(line.strip() for line in tmux.screen().splitlines())

    try:
        exp = experiment_with_notes(tmp_path, server.url, 500)
        tmux.start(app_command(tmp_path, {"NOTES_TUI_CONFIG": str(tmp_path / "config.toml")}))
        tmux.wait_for("1 Servers")
        tmux("send-keys", "-t", "t", "3")
        tmux.wait_for("pna-test", "500")
        tmux("send-keys", "-t", "t", "g")
        tmux.wait_for("Run pna.toml here")
        tmux("send-keys", "-t", "t", "Enter")
        tmux.wait_for("notes/s", "ETA")
        wait_for(lambda: rows_in(exp) >= 60, 60, "a few batches written", every=0.1)
        server.kill()
        killed = time.monotonic()
        expected = f"waiting for its server {host} (connection refused) since "
        wait_for(lambda: expected in joined() and "gives up at" in joined(), 5, "the waiting state on screen",
                 every=0.1)
        took = time.monotonic() - killed
        shown = joined()
        # the row, and no fading rate (the sparkline's scale, "0–20.0 notes/s", stays beside it)
        assert "waiting for server" in shown and not RATE.search(shown), shown
        print(f"\nkill -> waiting state on screen: {took:.2f} s\n{tmux.screen()}")
        assert rows_in(exp) < 500
        time.sleep(3)
        server = spawn_standin(latency=0.05, slots=4, port=port)  # the server job is back, at the same address
        back = time.monotonic()
        wait_for(lambda: "waiting for its server" not in joined() and RATE.search(joined()), 30,
                 "the wait to clear", every=0.1)
        print(f"server back -> wait cleared on screen: {time.monotonic() - back:.2f} s")
        wait_for(lambda: rows_in(exp) == 500, 90, "the run to finish every note", every=0.2)
        tmux.wait_for("500/500", "completed")
    finally:
        tmux("kill-server", check=False)
        server.stop()
