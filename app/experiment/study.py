"""A study's cells: every model × prompt variant × repeat of an experiment file's [study], each an `Experiment` of
its own that runs as one ledger run. A cell's experiment name (`STUDY/MODEL/PROMPT/rN`) keys its rows in the results
table, so a study resumes cell by cell the way an experiment resumes note by note."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.experiment.schema import SERVER_BACKENDS, ExperimentFile, PromptSection

if TYPE_CHECKING:
    from app.experiment.resolved import Experiment

BASE_PROMPT = "base"  # the variant name of [prompt] itself, in a study that lists no variants


@dataclass(frozen=True)
class StudyCell:
    study: str
    model: str
    prompt: str
    repeat: int  # 1-based
    seed: int
    index: int  # 1-based, in the order the cells run
    count: int

    @property
    def label(self) -> str:
        return f"{self.model}/{self.prompt}/r{self.repeat}"

    @property
    def experiment(self) -> str:
        return f"{self.study}/{self.label}"

    def header(self) -> dict:
        return {"name": self.study, "cell": self.label, "model": self.model, "prompt": self.prompt,
                "repeat": self.repeat, "seed": self.seed, "index": self.index, "cells": self.count}


def model_label(spec: ExperimentFile, gguf_stem: str | None = None) -> str:
    """What a cell calls [model]'s model: its name, else the GGUF file's name, else the bundled model."""
    return spec.model.name or gguf_stem or "embedded"


def plan(spec: ExperimentFile, gguf_stem: str | None = None) -> list[tuple[str, str, PromptSection, int]]:
    """(model, prompt variant, prompt, repeat) of every cell, grouped by model so a server loads each model once."""
    study = spec.study
    assert study is not None
    models = study.models or [model_label(spec, gguf_stem)]
    variants = {name: PromptSection(system=v.system if v.system is not None else spec.prompt.system,
                                    user=v.user if v.user is not None else spec.prompt.user)
                for name, v in study.prompts.items()} or {BASE_PROMPT: spec.prompt}
    return [(m, name, prompt, r) for m in models for name, prompt in variants.items()
            for r in range(1, study.repeats + 1)]


def longest_cell_name(spec: ExperimentFile) -> str:
    return max((f"{spec.name}/{m}/{p}/r{r}" for m, p, _, r in plan(spec)), key=len)


def study_cells(exp: Experiment) -> list[Experiment]:
    """The experiment's cells, in the order they run; an experiment without [study] is its one cell, itself."""
    spec = exp.spec
    if spec.study is None:
        return [exp]
    cells = plan(spec, exp.gguf_path.stem if exp.gguf_path else None)
    out = []
    for i, (model, variant, prompt, repeat) in enumerate(cells, start=1):
        seed = spec.model.options.seed + repeat - 1
        cell = StudyCell(spec.name, model, variant, repeat, seed, i, len(cells))
        options = spec.model.options.model_copy(update={"seed": seed})
        # a server model is named by the cell; the embedded model stays what [model] says (its gguf)
        name = model if spec.model.backend in SERVER_BACKENDS else spec.model.name
        model_section = spec.model.model_copy(update={"name": name, "options": options})
        cell_spec = spec.model_copy(update={"name": cell.experiment, "model": model_section, "prompt": prompt,
                                            "study": None})
        out.append(dataclasses.replace(exp, spec=cell_spec, cell=cell))
    return out
