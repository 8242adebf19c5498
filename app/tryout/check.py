"""Is the experiment ready to run? The lines `notes-tui check` prints and the Experiments screen shows. With `try`,
the one place that shows note text (the first prompt), because the user asked to see it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

from app.backends import make_backend
from app.cluster.auto import resolve_hosts
from app.engine.answer import AnswerSpec
from app.engine.prompt import Template, prompt_hash
from app.experiment import Experiment, load_experiment
from app.experiment.study import study_cells
from app.sources import open_source, todo_count
from ledger.serverfacts import server_rows


def check_lines(file: str, rerun_invalid: bool = False) -> Iterator[tuple[str, bool]]:
    """(line, is_warning) as `check` prints them; raises UserError (one line) for what stops the check."""
    exp = resolve_hosts(load_experiment(file))
    for warning in exp.warnings:
        yield warning, True
    spec = exp.spec
    answer = AnswerSpec(spec.answer)
    yield f"config:  {exp.path} is valid: experiment {spec.name!r}, backend {spec.model.backend}", False
    cells = study_cells(exp)
    if spec.study is not None:
        yield from _study_lines(exp, cells, answer, rerun_invalid)
        exp = cells[0]  # the rest of the check is the first cell's, with every model of the study asked for
        spec = exp.spec
    source = open_source(exp)
    try:
        survey = source.survey(rerun_invalid)
        what = spec.source.table or "query"
        yield (f"source:  {exp.source_label} ({what}): {survey.todo} notes to do"
               + (f", {survey.null_ids} with a NULL id (skipped)" if survey.null_ids else "")
               + (f", {len(survey.duplicate_keys)} duplicated ids" if survey.duplicate_keys else "")), False
        num_ctx = spec.model.options.num_ctx
        # ~4 characters a token in English clinical text: a rough bound, enough to warn before a long run
        longest, over = source.length_profile(over_chars=num_ctx * 4)
        yield (f"notes:   longest {longest} characters (~{longest // 4} tokens); num_ctx is {num_ctx}"
               + (f"; {over} notes look longer than num_ctx and would be cut (flagged truncated): "
                  "raise [model.options].num_ctx" if over else "")), False
        state = "exists" if survey.results_table_exists else "will be created on the first run"
        yield f"results: table {spec.results.table} {state}", False
        firsts: dict[str | None, Experiment] = {}
        for c in cells:  # one cell a model, in the order they run
            firsts.setdefault(c.spec.model.name, c)
        for model_exp in firsts.values():
            backend = make_backend(model_exp)
            info = asyncio.run(_prepare(backend))
            where_model = ", ".join(info.hosts)
            version = f" (server {info.server_version})" if info.server_version else ""
            digest = (info.digest or "unknown").removeprefix("sha256:")[:12]
            yield f"model:   {info.model} digest {digest} on {where_model}{version}", False
            memory = memory_line(info.server, model_exp.spec.model.options.num_ctx, info.hosts)
            if memory:
                yield memory, False
            cold = backend.cold_hosts()
            if cold:
                then = ("the run loads it first" if len(cold) == len(info.hosts)
                        else "the first answers there wait for it to load")
                yield f"memory:  not in memory on {', '.join(cold)}: {then}", False
        facts = {"server": info.server, "allow_remote": spec.model.allow_remote, "backend": spec.model.backend}
        for label, text in server_rows(facts):
            if label != "server":
                yield f"{label + ':':<8} {text}", label == "remote" and bool(spec.model.allow_remote)
        for problem in info.details.get("unreachable", []):
            yield f"warning: host {problem} does not answer; the run will use the others", True
        options = spec.model.options.as_dict()
        yield f"options: {json.dumps(options)}", False
        yield f"prompt hash: {prompt_hash(spec.prompt.system, spec.prompt.user, answer.schema, options, spec.model.think)}", False
        yield f"answer schema: {json.dumps(answer.schema)}", False
        first = next(source.iter_chunks(rerun_invalid, limit=1), [])
        if not first:
            yield "nothing to do: every note has an answer for this experiment", False
            return
        unit = first[0]
        yield f"\nfirst note to do: {unit.uid}" + (" (empty: it will not be sent)" if unit.text is None else ""), False
        if spec.prompt.system:
            yield "--- system ---", False
            yield spec.prompt.system, False
        yield "--- user ---", False
        yield Template(spec.prompt.user).render(unit.fields), False
        yield "---", False
    finally:
        source.close()


def _study_lines(exp: Experiment, cells: list[Experiment], answer: AnswerSpec,
                 rerun_invalid: bool) -> Iterator[tuple[str, bool]]:
    study = exp.spec.study
    assert study is not None
    models = len({c.cell.model for c in cells if c.cell})
    prompts = len({c.cell.prompt for c in cells if c.cell})
    yield (f"study:   {len(cells)} cells = {models} model{'s' * (models != 1)} × {prompts} prompt"
           f"{'s' * (prompts != 1)} × {study.repeats} repeat{'s' * (study.repeats != 1)}, run in this order "
           "(grouped by model), each a run of its own:"), False
    total = 0
    for c in cells:
        assert c.cell is not None
        todo = todo_count(c, rerun_invalid)
        total += todo
        s = c.spec
        phash = prompt_hash(s.prompt.system, s.prompt.user, answer.schema, s.model.options.as_dict(), s.model.think)
        yield (f"  {c.cell.index:>3}  {c.cell.label:<40} seed {c.cell.seed:<6} prompt {phash[:12]}  "
               f"{todo} requests" + (" (complete)" if todo == 0 else "")), False
    yield f"study:   {total} requests in all", False
    if study.repeats > 1 and exp.spec.model.options.temperature == 0:
        yield ("warning: repeats at temperature 0 tend to give the same answers whatever the seed; set "
               "[model.options].temperature (e.g. 0.7) to measure how stable the answers are"), True


def memory_line(server: dict, num_ctx: int, hosts: tuple[str, ...]) -> str | None:
    """What the model needs on the GPU: its file, and the KV cache Ollama reserves for num_ctx tokens a slot —
    e.g. `gpu:     4.7 GB weights + 1.1 GB KV cache a slot (num_ctx 8192; 32 layers × 8 KV heads × 128, f16): 5.8 GB
    with 1 slot, 9.0 GB with 4 slots`."""
    from app.backends.kvcache import gigabytes
    from app.cluster.tokens import job_slots

    kv = server.get("kv_cache") if isinstance(server, dict) else None
    if not isinstance(kv, dict) or not isinstance(kv.get("bytes_per_token"), int):
        return None
    per_slot = kv["bytes_per_token"] * num_ctx
    weights = server.get("model_bytes") if isinstance(server.get("model_bytes"), int) else 0
    # one slot (Ollama's default), four, and what a server job's profile set (num_parallel)
    slots = sorted({1, 4} | {n for h in hosts if (n := job_slots(h))})
    totals = ", ".join(f"{gigabytes(weights + n * per_slot)} with {n} slot{'s' if n != 1 else ''}" for n in slots)
    head = f"{gigabytes(weights)} weights + " if weights else ""
    return (f"gpu:     {head}{gigabytes(per_slot)} KV cache a slot (num_ctx {num_ctx}; {kv.get('shape')}, f16): "
            f"{totals} — an estimate (OLLAMA_KV_CACHE_TYPE=q8_0 halves the cache)")


async def _prepare(backend):
    try:
        return await backend.prepare()
    finally:
        await backend.close()
