"""`notes-tui check FILE`: is the experiment ready to run? The one command that prints note text (the first prompt),
because the user asked to see it."""

from __future__ import annotations

import asyncio
import json
import sys

from app.backends import make_backend
from app.cluster.auto import resolve_hosts
from app.config import load_experiment
from app.engine.answer import AnswerSpec
from app.engine.prompt import Template, prompt_hash
from app.sources import open_source


def check(file: str, rerun_invalid: bool = False) -> int:
    exp = resolve_hosts(load_experiment(file))
    for warning in exp.warnings:
        print(f"notes-tui: {warning}", file=sys.stderr)
    spec = exp.spec
    answer = AnswerSpec(spec.answer)
    print(f"config:  {exp.path} is valid: experiment {spec.name!r}, backend {spec.model.backend}")
    source = open_source(exp)
    try:
        survey = source.survey(rerun_invalid)
        what = spec.source.table or "query"
        print(f"source:  {exp.source_label} ({what}): {survey.todo} notes to do"
              + (f", {survey.null_ids} with a NULL id (skipped)" if survey.null_ids else "")
              + (f", {len(survey.duplicate_keys)} duplicated ids" if survey.duplicate_keys else ""))
        num_ctx = spec.model.options.num_ctx
        # ~4 characters a token in English clinical text: a rough bound, enough to warn before a long run
        longest, over = source.length_profile(over_chars=num_ctx * 4)
        print(f"notes:   longest {longest} characters (~{longest // 4} tokens); num_ctx is {num_ctx}"
              + (f"; {over} notes look longer than num_ctx and would be cut (flagged truncated): "
                 "raise [model.options].num_ctx" if over else ""))
        state = "exists" if survey.results_table_exists else "will be created on the first run"
        print(f"results: table {spec.results.table} {state}")
        backend = make_backend(exp)
        info = asyncio.run(_prepare(backend))
        where_model = ", ".join(info.hosts)
        version = f" (server {info.server_version})" if info.server_version else ""
        print(f"model:   {info.model} digest {(info.digest or 'unknown').removeprefix('sha256:')[:12]} on {where_model}{version}")
        for problem in info.details.get("unreachable", []):
            print(f"warning: host {problem} does not answer; the run will use the others", file=sys.stderr)
        options = spec.model.options.as_dict()
        print(f"options: {json.dumps(options)}")
        print(f"prompt hash: {prompt_hash(spec.prompt.system, spec.prompt.user, answer.schema, options)}")
        print(f"answer schema: {json.dumps(answer.schema)}")
        first = next(source.iter_chunks(rerun_invalid, limit=1), [])
        if not first:
            print("nothing to do: every note has an answer for this experiment")
            return 0
        unit = first[0]
        print(f"\nfirst note to do: {unit.uid}" + (" (empty: it will not be sent)" if unit.text is None else ""))
        if spec.prompt.system:
            print("--- system ---")
            print(spec.prompt.system)
        print("--- user ---")
        print(Template(spec.prompt.user).render(unit.fields))
        print("---")
        return 0
    finally:
        source.close()


async def _prepare(backend):
    try:
        return await backend.prepare()
    finally:
        await backend.close()
