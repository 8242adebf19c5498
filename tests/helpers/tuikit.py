"""What the TUI tests share: a workspace and user config of their own, the app built by the CLI's factory, waiting
for conditions instead of sleeping for fixed times."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import tempfile
import time
from pathlib import Path

from app.context import load_context
from app.tui.app import NotesApp, make_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def pinned_resources():
    """Held while a snapshot test uses its fixed ports and paths (they are on screen, so they cannot be random).
    The xdist group keeps this session's snapshot tests on one worker; this keeps other sessions on the machine out."""
    with open(Path(tempfile.gettempdir()) / "notes-tui-pinned-snapshots.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def closed_url() -> str:
    """A port nothing listens on: connections are refused at once."""
    return f"http://127.0.0.1:{free_port()}"


def write_config(path: Path, servers: list[tuple[str, str | None]] = (), quota_gb: float | None = None) -> Path:
    lines = []
    if quota_gb is not None:
        lines += ["[models]", f"quota_gb = {quota_gb}", ""]
    for url, name in servers:
        lines += ["[[servers]]", f'url = "{url}"'] + ([f'name = "{name}"'] if name else []) + [""]
    path.write_text("\n".join(lines))
    return path


def build_app(tmp_path: Path, environ: dict[str, str] | None = None, ledger_dir: Path | None = None,
              **kwargs) -> NotesApp:
    workspace = tmp_path / "workspace"
    (workspace / "experiments").mkdir(parents=True, exist_ok=True)
    env = {"NOTES_TUI_CONFIG": str(tmp_path / "user-config.toml"), **(environ or {})}
    return make_app(load_context(workspace, env), ledger_dir or tmp_path / "ledger", **kwargs)


async def until(pilot, condition, timeout: float = 10.0, what: str = "condition") -> None:
    """Let the app run until `condition()` holds (checked every 20 ms)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await pilot.pause(0.02)


def rows(app: NotesApp, table_id: str) -> dict[str, tuple]:
    """The rows a FitTable was given (every column, shown or not), by key."""
    table = app.screen.query_one(f"#{table_id}")
    return {key: tuple(str(c) for c in cells) for key, cells in table._rows}


def screen_text(app: NotesApp) -> str:
    """What the terminal shows now, as plain text, a line per row."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def settle(pilot, seconds: float = 0.1) -> None:
    await pilot.pause(seconds)
    await asyncio.sleep(0)


def run(coro_fn):
    """Run an async test body on a fresh event loop (no plugin needed)."""
    import functools

    @functools.wraps(coro_fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(coro_fn(*args, **kwargs))

    return wrapper
