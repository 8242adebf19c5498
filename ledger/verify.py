"""`ledger verify`: walk the chain of seals and every journal, and name the first run, and the first record in it,
that was changed, deleted or reordered.

Reads the files only (never the index, which is derived from them and could be rebuilt from altered files). What it
can tell apart:
- a record changed: the next record's `prev` no longer matches it, or, for the last record, the seal's head;
- a record deleted: a gap in `seq`, or fewer records than the seal counted;
- records reordered: a `seq` out of place that turns up elsewhere in the file;
- journals swapped or renamed: records that name another run than their file;
- an adjudication changed, deleted or reordered: the same tests on adjudications.jsonl, whose every seal fixes
  the hash of its first N records;
- the chain itself edited, reordered or cut: the same tests on chain.jsonl;
- a whole chain rewritten: only a head kept elsewhere shows it (`--head`).
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .adjudication import ADJ_FILE, SEAL_KIND
from .chain import CHAIN_FILE, check_seal_line
from .evals import EVAL_DIR
from .journal import JOURNAL_DIR, SUFFIX, line_hash

MIN_HEAD_CHARS = 12


@dataclass
class Problem:
    what: str  # "run <id>", "eval <id>" or "chain"
    file: str
    seq: int | None  # the record (or chain line, from 0) that was changed, deleted or moved
    message: str


@dataclass
class Verification:
    ledger_dir: str
    head: str | None = None
    entries: int = 0
    sealed_runs: int = 0
    sealed_evals: int = 0
    adjudications: int = 0  # records in the adjudications file
    sealed_adjudications: int = 0  # of them, how many the latest seal covers
    unsealed: list[str] = field(default_factory=list)  # journals of runs still running, crashed or not yet imported
    problems: list[Problem] = field(default_factory=list)
    head_check: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        return out


MAX_FILE_BYTES = 4 << 30  # a journal of millions of notes is hundreds of MB; past this it is not a journal


class Unreadable(Exception):
    """A file where a journal should be that verify will not read: a link, a FIFO, a device, a directory, too big."""


def _lines(path: Path) -> list[bytes] | None:
    """The file's lines, read from a regular file only (never through a link: a journal that is a link to /dev/zero
    drove verify to 24 GB; a FIFO would hang it), at most MAX_FILE_BYTES. None when there is no such file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if path.is_symlink():
            raise Unreadable("is a symbolic link, not a journal: verify does not follow links") from None
        raise Unreadable(f"cannot be read ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Unreadable("is not a regular file (a FIFO, a device or a directory), not a journal")
        if st.st_size > MAX_FILE_BYTES:
            raise Unreadable(f"is {st.st_size} bytes, more than any journal ({MAX_FILE_BYTES} at most)")
        chunks, left = [], st.st_size
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    lines = b"".join(chunks).split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def _read(path: Path, what: str, file: str, problems: list[Problem]) -> list[bytes] | None:
    """_lines, with a file verify will not read reported as a problem (and treated as empty)."""
    try:
        return _lines(path)
    except Unreadable as exc:
        problems.append(Problem(what, file, None, f"{file} {exc}"))
        return []


def _record_kind(line: bytes) -> str:
    try:
        rec = json.loads(line)
    except ValueError:
        return "?"
    return str(rec.get("type") or rec.get("kind") or "?") if isinstance(rec, dict) else "?"


def walk(lines: list[bytes], ident: str, what: str, file: str) -> Problem | None:
    """The first break in one hash-chained file (a journal, an eval, or the chain when ident is None)."""
    seqs: list[Any] = []
    recs: list[dict[str, Any] | None] = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            rec = None
        recs.append(rec if isinstance(rec, dict) else None)
        seqs.append(rec.get("seq") if isinstance(rec, dict) else None)
    for i, rec in enumerate(recs):
        if rec is None:
            return Problem(what, file, i, f"line {i + 1} is not a JSON record: it was changed")
        seq = rec.get("seq")
        if seq != i:
            if i in seqs[i + 1:]:
                return Problem(what, file, i, f"records are out of order: line {i + 1} holds seq {seq}, "
                                              f"seq {i} comes later")
            if isinstance(seq, int) and seq > i:
                gone = f"seq {i}" if seq == i + 1 else f"seq {i} to {seq - 1}"
                return Problem(what, file, i, f"record {gone} was deleted")
            return Problem(what, file, i, f"line {i + 1} holds seq {seq!r} where seq {i} belongs: a record was "
                                          "copied or moved")
        expected = None if i == 0 else line_hash(lines[i - 1])
        if rec.get("prev") != expected:
            if i == 0:
                return Problem(what, file, 0, "the first record has a prev hash: records before it were deleted")
            return Problem(what, file, i - 1, f"record seq {i - 1} ({_record_kind(lines[i - 1])}) was changed: "
                                              f"record seq {i} no longer matches its hash")
        if ident is not None and rec.get("run") != ident:
            return Problem(what, file, i, f"record seq {i} belongs to {rec.get('run')!r}, not to this file: "
                                          "journals were swapped or renamed")
    return None


def _journal_path(ledger_dir: Path, kind: str, ident: str) -> tuple[Path, str]:
    folder = JOURNAL_DIR if kind == "run" else EVAL_DIR
    return ledger_dir / folder / f"{ident}{SUFFIX}", f"{folder}/{ident}{SUFFIX}"


def _check_sealed(ledger_dir: Path, seal: dict[str, Any]) -> Problem | None:
    kind, ident = seal["kind"], seal["id"]
    what = f"{kind} {ident}"
    path, file = _journal_path(ledger_dir, kind, ident)
    try:
        lines = _lines(path)
    except Unreadable as exc:
        return Problem(what, file, None, f"{file} {exc}")
    if lines is None:
        return Problem(what, file, None, f"the journal is gone (sealed with {seal['records']} records): it was deleted "
                                         "or renamed")
    broken = walk(lines, ident, what, file)
    if broken is not None:
        return broken
    n = len(lines)
    if n < seal["records"]:
        gone = f"seq {n}" if n == seal["records"] - 1 else f"seq {n} to {seal['records'] - 1}"
        return Problem(what, file, n, f"record {gone} was deleted from the end (sealed with {seal['records']} records)")
    if n > seal["records"]:
        return Problem(what, file, seal["records"], f"{n - seal['records']} records were added after it was sealed")
    if line_hash(lines[-1]) != seal["head"]:
        return Problem(what, file, n - 1, f"record seq {n - 1} ({_record_kind(lines[-1])}) was changed after it was "
                                          "sealed: its hash is not the sealed head")
    return None


def verify_ledger(ledger_dir: Path, head: str | None = None, indexed: list[tuple[int, str]] | None = None) -> Verification:
    """`indexed`: the (seq, line hash) of every seal the index recorded, a second witness of the chain file (the
    index lives beside it, but a rebuild replaces it: only a head kept elsewhere survives that)."""
    ledger_dir = Path(ledger_dir)
    result = Verification(str(ledger_dir))
    chain_lines = _read(ledger_dir / CHAIN_FILE, "chain", CHAIN_FILE, result.problems) or []
    seals: list[dict[str, Any]] = []
    chain_broken = walk(chain_lines, None, "chain", CHAIN_FILE)
    if chain_broken is not None:
        result.problems.append(chain_broken)
    hashes = [line_hash(line) for line in chain_lines]
    witness = _against_index(hashes, indexed or [])
    if witness is not None:
        result.problems.append(witness)
    for i, line in enumerate(chain_lines):
        try:
            seal = check_seal_line(line, i, hashes[i - 1] if i else None)
        except ValueError:
            try:  # out of place, but it still says which journal it sealed: check that journal anyway
                seal = json.loads(line)
                check_seal_line(line, seal.get("seq"), seal.get("prev"))
            except (ValueError, AttributeError, TypeError):
                continue
        seals.append(seal)
    seen: set[tuple[str, str]] = set()
    adjudication_seals = []
    for seal in seals:
        key = (seal["kind"], seal["id"])
        if key in seen:
            result.problems.append(Problem(f"{seal['kind']} {seal['id']}", CHAIN_FILE, seal["seq"],
                                           "sealed twice: a chain line was copied"))
            continue
        seen.add(key)
        if seal["kind"] == SEAL_KIND:
            adjudication_seals.append(seal)
            continue
        problem = _check_sealed(ledger_dir, seal)
        if problem is not None:
            result.problems.append(problem)
    _check_adjudications(ledger_dir, adjudication_seals, result)
    result.sealed_runs = sum(1 for k, _ in seen if k == "run")
    result.sealed_evals = sum(1 for k, _ in seen if k == "eval")
    _check_unsealed(ledger_dir, seen, result)
    result.entries = len(chain_lines)
    result.head = hashes[-1] if hashes else None
    if head is not None:
        result.head_check = _check_head(head, hashes, chain_broken)
        if not result.head_check["found"]:
            result.problems.append(Problem("chain", CHAIN_FILE, None, result.head_check["message"]))
    return result


def _against_index(hashes: list[str], indexed: list[tuple[int, str]]) -> Problem | None:
    for seq, digest in indexed:
        if seq >= len(hashes):
            return Problem("chain", CHAIN_FILE, seq, f"the index recorded {len(indexed)} seals, {CHAIN_FILE} holds "
                                                     f"{len(hashes)}: seals were removed")
        if hashes[seq] != digest:
            return Problem("chain", CHAIN_FILE, seq, f"line {seq + 1} is not the seal the index recorded: it was changed")
    return None


def _check_adjudications(ledger_dir: Path, seals: list[dict[str, Any]], result: Verification) -> None:
    """The adjudications file: its own chain, and every seal's hash of its first N records (each seal fixes a
    prefix, so a change anywhere in what was sealed is caught, the last record of that prefix included)."""
    what = "adjudications"
    lines = _read(ledger_dir / ADJ_FILE, what, ADJ_FILE, result.problems)
    if lines is None:
        if seals:
            most = max(s["records"] for s in seals)
            result.problems.append(Problem(what, ADJ_FILE, None, f"the file is gone (sealed with {most} records): it "
                                                                 "was deleted or renamed"))
        return
    result.adjudications = len(lines)
    broken = walk(lines, None, what, ADJ_FILE)
    if broken is not None:
        result.problems.append(broken)
    for seal in sorted(seals, key=lambda s: s["records"]):
        n = seal["records"]
        if len(lines) < n:
            gone = f"seq {len(lines)}" if len(lines) == n - 1 else f"seq {len(lines)} to {n - 1}"
            result.problems.append(Problem(what, ADJ_FILE, len(lines), f"record {gone} was deleted (sealed with {n} "
                                                                       "records)"))
            return
        if line_hash(lines[n - 1]) != seal["head"]:
            if broken is None:  # the chain holds, so the sealed last record itself was changed
                result.problems.append(Problem(what, ADJ_FILE, n - 1, f"record seq {n - 1} (adjudication) was changed "
                                                                      "after it was sealed: its hash is not the sealed head"))
            return
        result.sealed_adjudications = n


def _check_unsealed(ledger_dir: Path, seen: set[tuple[str, str]], result: Verification) -> None:
    """Journals no seal covers yet: their own chain still has to hold."""
    for kind, folder in (("run", JOURNAL_DIR), ("eval", EVAL_DIR)):
        try:
            names = sorted(e.name for e in os.scandir(ledger_dir / folder)
                           if e.name.endswith(SUFFIX) and not e.name.startswith("."))
        except FileNotFoundError:
            continue
        for name in names:
            ident = name[: -len(SUFFIX)]
            if (kind, ident) in seen:
                continue
            result.unsealed.append(f"{folder}/{name}")
            lines = _read(ledger_dir / folder / name, f"{kind} {ident}", f"{folder}/{name}", result.problems) or []
            if lines and not lines[-1].endswith(b"}"):
                lines = lines[:-1]  # a line still being written by a live run
            problem = walk(lines, ident, f"{kind} {ident}", f"{folder}/{name}")
            if problem is not None:
                result.problems.append(problem)


def _check_head(head: str, hashes: list[str], chain_broken: Problem | None) -> dict[str, Any]:
    want = head.strip().lower()
    matches = [i for i, h in enumerate(hashes) if h.startswith(want)]
    if not matches:
        return {"head": want, "found": False, "message": (
            f"head {want} is not in this ledger's chain ({len(hashes)} entries): the chain was rewritten after that "
            "head was taken, or this is another ledger")}
    i = matches[0]
    if chain_broken is not None and chain_broken.seq is not None and chain_broken.seq <= i:
        return {"head": want, "found": False, "entry": i + 1, "message": (
            f"head {want} is entry {i + 1} of the chain, but the chain is broken before it (line {chain_broken.seq + 1})")}
    return {"head": want, "found": True, "entry": i + 1, "since": len(hashes) - i - 1,
            "message": f"head {want} is entry {i + 1} of {len(hashes)}: {len(hashes) - i - 1} sealed since"}
