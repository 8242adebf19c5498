"""The headless printer: plain progress lines for a terminal or a Slurm log. Never note text."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from app.engine.events import HostState, Notice, Progress, RunFinished, RunStarted, Waiting


def clock(seconds: float) -> str:
    s = int(max(0, seconds))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


class ConsolePrinter:
    def __init__(self, out: TextIO | None = None, every_s: float = 5.0):
        self.out = out or sys.stdout
        self.every_s = every_s
        self._last = 0.0
        self._host_said: dict[str, float] = {}
        self._down: set[str] = set()  # hosts said down and not yet up again: a retry that fails again says nothing
        self._waiting_on: set[str] = set()  # Waiting.on said and not yet over
        self.load_s = 0.0  # the seconds the run spent loading its model: no note could be answered then
        self.started: RunStarted | None = None

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def __call__(self, event: object) -> None:
        if isinstance(event, RunStarted):
            self.started = event
            h = event.header
            digest = (h.get("model_digest") or "").removeprefix("sha256:")[:12] or "unknown"
            hosts = h.get("hosts") or []
            where = f"{len(hosts)} host{'s' if len(hosts) != 1 else ''}" if h.get("backend") != "llamacpp" else "in-process"
            self.say(f"run {event.run_id}: {event.experiment!r} with {h.get('model')} (digest {digest}) "
                     f"{where}, {event.total} notes to do")
            self._last = time.monotonic()
        elif isinstance(event, Notice):
            self.say(f"note: {event.message}")
        elif isinstance(event, HostState):
            now = time.monotonic()
            if event.state == "down":
                if event.host in self._down:
                    return
                self._down.add(event.host)
            elif event.state == "up":
                self._down.discard(event.host)
            if event.state != "busy" or now - self._host_said.get(event.host, 0.0) >= self.every_s:
                self._host_said[event.host] = now
                self.say(f"host {event.host}: {event.detail or event.state}")
        elif isinstance(event, Waiting):
            # once when the wait begins and once when it ends; a new error meanwhile shows in the progress lines
            if event.over:
                self._waiting_on.discard(event.on)
                self.say(event.over_words())
                if event.on == "model":
                    self.load_s = max(0.0, time.time() - event.since)
            elif event.on not in self._waiting_on:
                self._waiting_on.add(event.on)
                self.say(event.words())
        elif isinstance(event, Progress):
            now = time.monotonic()
            if now - self._last >= self.every_s:
                self._last = now
                self.say(self.progress_line(event, self.load_s))
        elif isinstance(event, RunFinished):
            self.say(self.summary(event))

    @staticmethod
    def progress_line(p: Progress, load_s: float = 0.0) -> str:
        """`load_s`: the seconds spent loading the model, left out of the rate (and so of the ETA)."""
        c = p.counts
        answering = p.elapsed_s - load_s
        rate = c.done / answering if answering > 0 else 0.0
        pct = 100.0 * c.done / c.total if c.total else 100.0
        answered = c.valid + c.invalid
        valid = f"{100.0 * c.valid / answered:.1f}%" if answered else "-"
        eta = clock((c.total - c.done) / rate) if rate > 0 else "--:--:--"
        limit = f" of {sum(p.limits.values())}" if p.limits else ""
        line = f"[{clock(p.elapsed_s)}] {c.done}/{c.total} ({pct:.1f}%)  "
        if not any(w.stalls for w in p.waiting):  # with no server to answer, a rate and ETA mean nothing
            line += f"valid {valid}  {rate:.1f} notes/s  ETA {eta}  in flight {p.in_flight}{limit}"
        # what it waits for, since when and until when, on the same line
        return line + "".join(f"  {w.words()}" for w in p.waiting)

    @staticmethod
    def summary(f: RunFinished) -> str:
        c = f.counts
        rate = c.done / f.elapsed_s if f.elapsed_s > 0 else 0.0
        lines = [f"run {f.run_id} {f.status}" + (f" ({f.reason})" if f.reason and f.status != "completed" else "")
                 + f" in {clock(f.elapsed_s)}: {c.done}/{c.total} notes, {rate:.1f} notes/s",
                 f"  valid {c.valid}, invalid {c.invalid} (fallback written), retried {c.retried}, empty {c.empty}, "
                 f"truncated {c.truncated}, errors {c.errors}; tokens in {c.tokens_in}, out {c.tokens_out}"]
        if c.replaced_bytes:
            lines.append(f"  {c.replaced_bytes} bytes of note text were not UTF-8 and were replaced")
        if c.errors:
            lines.append(f"  {c.errors} notes got no answer (server errors, or a duplicated id) and have no row: "
                         "run again to retry them")
        reasons = f.extra.get("reasons") or {}
        if c.invalid and reasons:
            from ledger.reasons import commonest, reason_text

            counted = ", ".join(f"{k} {n}" for k, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
            lines.append(f"  invalid answers by reason: {counted}; most: {reason_text(commonest(reasons))}")
        if c.truncated:
            lines.append("  truncated notes filled the whole context: raise [model.options].num_ctx and rerun them")
        limits = f.extra.get("in_flight") or {}
        if limits and any(v["max"] > 1 for v in limits.values()):
            lines.append("  in flight per host (min/median/max of the limit the run found): " + ", ".join(
                f"{host} {v['min']}/{v['median']}/{v['max']}" for host, v in limits.items()))
        load = f.extra.get("model_load")
        if load:
            from ledger.serverfacts import model_load_text

            lines.append(f"  model load: {model_load_text(load)}")
        if f.last_error:
            lines.append(f"  last error: {f.last_error}")
        return "\n".join(lines)
