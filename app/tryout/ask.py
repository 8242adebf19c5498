"""Send a few notes to the experiment's real backend and keep everything a person developing the prompt wants to see:
the note, the raw reply, the validated answer or what was wrong with it. Prompts are rendered and replies validated
by the engine's own Template and AnswerSpec, retried as a run retries them. Nothing is written anywhere.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from app.backends import make_backend
from app.backends.base import Backend, Busy, ModelInfo, PromptTooLong, Transient
from app.engine.answer import AnswerSpec
from app.engine.modelload import load_model
from app.engine.prompt import Template, prompt_hash
from app.engine.runner import BUSY_BACKOFF_S, MAX_TRANSPORT_FAILURES
from app.experiment import Experiment
from app.sources.base import Unit


@dataclass
class Attempt:
    raw: str  # the reply as the model wrote it
    error: str | None = None  # None: valid
    error_detail: str | None = None


@dataclass
class TriedNote:
    id: str
    note: str | None  # the note text (try and check are the only places it is shown: the user asked)
    outcome: str  # valid | invalid | empty (not sent) | error (no answer: transport)
    raw: str | None = None  # the last reply, as the model wrote it
    replies: list[Attempt] = field(default_factory=list)  # every attempt's reply and what was wrong with it
    answer: dict[str, Any] | None = None  # the validated answer
    error: str | None = None  # json | schema | cutoff | blank | thinking | too_long | transport
    error_detail: str | None = None  # which field and what was wrong, or the transport failure
    attempts: int = 0
    tokens_in: int | None = None
    tokens_out: int | None = None
    latency_ms: float | None = None
    truncated: bool = False
    host: str | None = None
    gold: Any = None  # the gold label, when the experiment names them (issue 15's [evaluation])
    agrees: bool | None = None


@dataclass
class TryReport:
    experiment: str
    model: str
    model_digest: str | None
    hosts: list[str]
    prompt_hash: str
    picked: str  # which notes, in words
    notes: list[TriedNote] = field(default_factory=list)
    agreement: dict[str, Any] | None = None  # see app.tryout.gold.agreement
    model_load: dict[str, Any] | None = None  # the model loaded first (it was not in memory): hosts, seconds, outcome


async def ask_all(exp: Experiment, units: Sequence[Unit], backend: Backend | None = None) -> tuple[ModelInfo, list[TriedNote]]:
    """Answer `units` with as many requests in flight as a run would use; results in the order of `units`."""
    backend = backend or make_backend(exp)
    try:
        info = await backend.prepare()
        cold = backend.cold_hosts()
        if cold:  # first, so that a tried note's latency is the model's, not a load's
            info.details["model_load"] = await load_model(backend, cold)
        answer = AnswerSpec(exp.spec.answer)
        template = Template(exp.spec.prompt.user)
        cap = exp.spec.run.concurrency or backend.max_in_flight
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(len(units)):
            queue.put_nowait(i)
        tried: list[TriedNote | None] = [None] * len(units)

        async def worker(host: str) -> None:
            while not queue.empty():
                i = queue.get_nowait()
                tried[i] = await ask_one(exp, backend, answer, template, units[i], host)

        # a handful of notes: as many at once as a run would start each server with
        await asyncio.gather(*(worker(h) for h in info.hosts for _ in range(min(cap, backend.initial_in_flight(h)))))
        return info, [t for t in tried if t is not None]
    finally:
        await backend.close()


async def ask_one(exp: Experiment, backend: Backend, answer: AnswerSpec, template: Template, unit: Unit,
                  host: str) -> TriedNote:
    note = TriedNote(id=unit.uid, note=unit.text, outcome="empty")
    if unit.text is None:
        return note  # a run does not send empty notes either
    prompt = template.render(unit.fields)
    started = time.monotonic()
    failures = busy = 0
    note.host = host
    while True:
        try:
            reply = await backend.chat(host, exp.spec.prompt.system, prompt, answer.schema)
        except Busy:
            await asyncio.sleep(BUSY_BACKOFF_S[min(busy, len(BUSY_BACKOFF_S) - 1)])
            busy += 1
            continue
        except PromptTooLong as exc:
            note.attempts += 1
            note.truncated = True
            note.outcome, note.error = "invalid", "too_long"
            note.error_detail = f"the server refused the prompt: it does not fit the context ({exc}); raise num_ctx"
            break
        except Transient as exc:
            failures += 1
            if failures >= MAX_TRANSPORT_FAILURES:
                note.outcome, note.error, note.error_detail = "error", "transport", str(exc)
                break
            await asyncio.sleep(min(4.0, 0.25 * 2 ** failures))
            continue
        note.attempts += 1
        note.raw = reply.content
        note.tokens_in = (note.tokens_in or 0) + (reply.tokens_in or 0)
        note.tokens_out = (note.tokens_out or 0) + (reply.tokens_out or 0)
        note.truncated = note.truncated or reply.truncated
        verdict = answer.check(reply.content, cut_off=reply.done_reason == "length", thought=reply.thought)
        note.replies.append(Attempt(reply.content, verdict.error, verdict.detail))
        if verdict.values is not None:
            note.outcome, note.answer, note.error, note.error_detail = "valid", verdict.values, None, None
            break
        note.outcome, note.error, note.error_detail = "invalid", verdict.error, verdict.detail
        if note.attempts >= exp.spec.answer.max_attempts:
            break
    note.latency_ms = round((time.monotonic() - started) * 1000.0, 1)
    return note


def report_for(exp: Experiment, info: ModelInfo, picked: str, notes: list[TriedNote]) -> TryReport:
    schema = AnswerSpec(exp.spec.answer).schema
    phash = prompt_hash(exp.spec.prompt.system, exp.spec.prompt.user, schema, exp.spec.model.options.as_dict(),
                        exp.spec.model.think)
    return TryReport(experiment=exp.name, model=info.model, model_digest=info.digest, hosts=list(info.hosts),
                     prompt_hash=phash, picked=picked, notes=notes, model_load=info.details.get("model_load"))
