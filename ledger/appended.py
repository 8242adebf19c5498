"""Reading what was appended to an append-only file since a known offset: the chain of seals and the adjudications
are imported this way, line by line, each line's end offset kept so the next import starts where this one ended."""

from __future__ import annotations

from pathlib import Path


class FileShorter(Exception):
    """The file is shorter than what was already read from it: it was cut or replaced."""


def new_lines(path: Path, offset: int) -> tuple[list[tuple[bytes, int]], int]:
    """The complete lines of `path` past byte `offset`, each with the offset just past its newline, and the file's
    size (a last line without its newline — a writer that died mid-line, or one still writing — is left out)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        size = 0
    if size < offset:
        raise FileShorter(f"{path.name} is shorter than the {offset} bytes already read")
    if size == offset:
        return [], size
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(size - offset)
    lines, pos, complete = [], 0, data.rfind(b"\n") + 1
    while pos < complete:
        nl = data.index(b"\n", pos)
        lines.append((data[pos:nl], offset + nl + 1))
        pos = nl + 1
    return lines, size
