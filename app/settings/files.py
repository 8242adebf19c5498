"""Where the user's own notes-tui files live, and how they are written: owner-only, whole or not at all. No pydantic
here: a run's path reads server-job records and must not pay for the user config's models."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "NOTES_TUI_CONFIG"


def config_path(environ: dict[str, str] | None = None) -> Path:
    """$NOTES_TUI_CONFIG, else $XDG_CONFIG_HOME/notes-tui/config.toml, else ~/.config/notes-tui/config.toml."""
    env = os.environ if environ is None else environ
    if env.get(ENV_VAR):
        return Path(env[ENV_VAR]).expanduser()
    xdg = env.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".config"
    return base / "notes-tui" / "config.toml"


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Owner-only from the first byte (0600 in a 0700 folder), and whole or not at all (temp file, then rename).
    `mode`: the file's own, for a file rewritten in place of one the user may have made stricter or wider."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            if mode != 0o600:
                os.fchmod(f.fileno(), mode)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
