"""The text of a try: each note with its reply and answer, and the summary line — for `notes-tui try` and the
Experiments screen's try dialog."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.tryout import TriedNote, TryReport


def report_lines(report: TryReport) -> list[str]:
    digest = (report.model_digest or "unknown").removeprefix("sha256:")[:12]
    lines = [f"try:     {report.experiment!r} with {report.model} (digest {digest}) on {', '.join(report.hosts)}: "
             f"{report.picked}; nothing is written",
             f"prompt hash: {report.prompt_hash}"]
    if report.model_load:
        from ledger.serverfacts import model_load_text

        lines.append(f"model load: {model_load_text(report.model_load)}")
    for i, note in enumerate(report.notes, 1):
        lines += ["", f"[{i}/{len(report.notes)}] note {note.id}: {_verdict(note)}", f"        {_numbers(note)}",
                  "--- note ---", note.note if note.note is not None else "(empty: not sent)"]
        for k, attempt in enumerate(note.replies, 1):
            which = f"attempt {k} of {len(note.replies)}" if len(note.replies) > 1 else ""
            what = f"{attempt.error}: {attempt.error_detail}" if attempt.error else ""
            label = ", ".join(x for x in (which, what) if x)
            lines += ["--- reply" + (f" ({label})" if label else "") + " ---", attempt.raw]
        if note.answer is not None:
            lines += ["--- answer ---", *(f"{name}: {value}" for name, value in note.answer.items())]
        if note.gold is not None:
            agrees = "" if note.agrees is None else " (agrees)" if note.agrees else " (DIFFERS)"
            lines.append(f"--- gold: {note.gold}{agrees}")
    return lines + ["", summary(report)]


def _verdict(note: TriedNote) -> str:
    if note.outcome == "valid":
        return "valid"
    if note.outcome == "empty":
        return "empty (a run writes it as not answered)"
    if note.outcome == "error":
        return f"NO ANSWER ({note.error_detail})"
    return f"INVALID after {note.attempts} attempt{'s' if note.attempts != 1 else ''}: {note.error}: {note.error_detail}"


def _numbers(note: TriedNote) -> str:
    parts = [f"attempts {note.attempts}", f"tokens in {note.tokens_in if note.tokens_in is not None else '-'}, "
             f"out {note.tokens_out if note.tokens_out is not None else '-'}",
             f"latency {note.latency_ms:.0f} ms" if note.latency_ms is not None else "latency -"]
    if note.truncated:
        parts.append("TRUNCATED: the prompt filled num_ctx, the model did not see all of the note")
    return "   ".join(parts)


def summary(report: TryReport) -> str:
    import statistics

    notes = report.notes
    outcomes = {k: sum(1 for n in notes if n.outcome == k) for k in ("valid", "invalid", "empty", "error")}
    kinds: dict[str, int] = {}
    for n in notes:
        if n.outcome == "invalid" and n.error:
            kinds[n.error] = kinds.get(n.error, 0) + 1
    latencies = [n.latency_ms for n in notes if n.latency_ms is not None]
    line = (f"{len(notes)} note{'s' if len(notes) != 1 else ''}: {outcomes['valid']} valid, {outcomes['invalid']} invalid"
            + (f" ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))})" if kinds else "")
            + (f", {outcomes['empty']} empty" if outcomes["empty"] else "")
            + (f", {outcomes['error']} without an answer" if outcomes["error"] else "")
            + f"; tokens in {sum(n.tokens_in or 0 for n in notes)}, out {sum(n.tokens_out or 0 for n in notes)}"
            + (f"; median latency {statistics.median(latencies):.0f} ms" if latencies else ""))
    if kinds:
        from ledger.reasons import commonest, reason_text

        line += f"\nwhy invalid: {reason_text(commonest(kinds))}"
    truncated = sum(1 for n in notes if n.truncated)
    if truncated:
        line += f"; {truncated} truncated (raise [model.options].num_ctx)"
    a = report.agreement
    if a is not None:
        rate = f"{a['agree']}/{a['compared']} = {100 * a['rate']:.0f}%" if a["rate"] is not None else "nothing to compare"
        line += f"\nagreement with gold ({a['field']}): {rate} ({a['with_gold']} of {len(notes)} notes have gold)"
    return line
