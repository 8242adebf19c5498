"""What the schema cannot check key by key: names that become SQL identifiers, the answer's fields against its
fallback, the source's columns against the prompt's placeholders, the results table against the notes table, and the
gold labels against the answer. Each broken rule is one `ConfigError` naming the key and the fix."""

from __future__ import annotations

import re
import string
from pathlib import Path

from app.errors import ConfigError, key_part
from app.experiment.schema import (
    IDENT,
    NAME_MAX,
    QUALIFIED_IDENT,
    RESERVED_RESULT_COLUMNS,
    AnswerSection,
    EvaluationSection,
    ExperimentFile,
    SourceSection,
)
from app.experiment.study import longest_cell_name


def check_rules(path: Path, spec: ExperimentFile) -> ExperimentFile:
    """`spec` with every cross-key rule checked, and [evaluation]'s `field` filled in."""
    _check_answer(path, spec.answer)
    _check_source(path, spec.source)
    _check_prompt(path, spec)
    if not IDENT.match(spec.results.table.split(".")[-1]) or not QUALIFIED_IDENT.match(spec.results.table):
        raise ConfigError(path, "results.table", f"{spec.results.table!r} is not a plain table name",
                          "use letters, digits and _ (optionally database.table)")
    if spec.source.table and _same_table(spec.source.table, spec.results.table, spec.source.database):
        raise ConfigError(path, "results.table", f"{spec.results.table!r} is the notes table",
                          'name a table of its own for the answers, e.g. table = "pna_results"')
    taken = sorted(c for c in _unit_key_columns(spec.source) if c.lower() in RESERVED_RESULT_COLUMNS)
    if taken:
        raise ConfigError(path, "source.id_columns", f"id column {taken[0]!r} has the name of a column notes-tui "
                          "writes in the results table", "select it under another name in a query source "
                          f"(query = \"SELECT {taken[0]} AS {taken[0]}_id, …\")")
    clash = set(spec.answer.fields) & set(_unit_key_columns(spec.source))
    if clash:
        raise ConfigError(path, "answer.fields", f"field {sorted(clash)[0]!r} is also an id column",
                          "rename the answer field")
    if spec.evaluation is not None:
        spec = spec.model_copy(update={"evaluation": check_evaluation(path, spec, spec.evaluation)})
    if spec.study is not None:
        _check_study(path, spec)
    return spec


STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")  # a cell's name is made of these: no / or spaces


def _check_study(path: Path, spec: ExperimentFile) -> None:
    study = spec.study
    assert study is not None
    for name in study.prompts:
        if not STUDY_NAME.match(name):
            raise ConfigError(path, f"study.prompts.{key_part(name)}", f"{name!r} cannot name a prompt variant",
                              "use letters, digits, _ . : - (e.g. v1, short_system)")
    if study.models and spec.model.backend == "llamacpp":
        raise ConfigError(path, "study.models", "the embedded llamacpp backend runs one model (its gguf)",
                          "remove models from [study], or run the study on a server's models")
    for i, model in enumerate(study.models):
        if not STUDY_NAME.match(model):
            raise ConfigError(path, f"study.models[{i}]", f"{model!r} is not a model name a cell can carry",
                              "use the name the server lists (letters, digits, _ . : -)")
    longest = longest_cell_name(spec)
    if len(longest) > NAME_MAX:
        raise ConfigError(path, "name", f"the study's cell names grow to {len(longest)} characters ({longest!r})",
                          f"shorten the experiment's name, its prompt variants' or its models' ({NAME_MAX} at most)")
    if len(set(study.models)) != len(study.models):
        twice = next(m for m in study.models if study.models.count(m) > 1)
        raise ConfigError(path, "study.models", f"{twice!r} is listed twice", "list each model once")


def template_fields(template: str) -> tuple[str, ...]:
    """Names used as {name} in a template; raises ValueError for broken or fancy ({x!r}, {x:>9}) placeholders."""
    names = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not IDENT.match(name) or spec or conversion:
            raise ValueError(f"placeholder {{{name}{'!' + conversion if conversion else ''}"
                             f"{':' + spec if spec else ''}}} is not a plain {{column}}")
        names.append(name)
    return tuple(dict.fromkeys(names))


def _check_answer(path: Path, answer: AnswerSection) -> None:
    for name, fld in answer.fields.items():
        key = f"answer.fields.{key_part(name)}"
        if not IDENT.match(name):
            raise ConfigError(path, key, "field name is not a plain identifier", "use letters, digits and _")
        if name.lower() in RESERVED_RESULT_COLUMNS:
            raise ConfigError(path, key, f"{name!r} is a column notes-tui writes itself", "rename the field")
        if fld.type == "choice":
            if not fld.choices:
                raise ConfigError(path, key, "a choice field needs choices", 'add choices = ["yes", "no"]')
            if len(set(fld.choices)) != len(fld.choices):
                raise ConfigError(path, key + ".choices", "the same choice is listed twice", "remove the duplicate")
            if any(len(c) > 255 or not c.strip() for c in fld.choices):
                raise ConfigError(path, key + ".choices", "a choice is empty or longer than 255 characters",
                                  "shorten it")
        elif fld.choices is not None:
            raise ConfigError(path, key + ".choices", f"choices only apply to type = \"choice\", not {fld.type!r}",
                              "remove choices or change the type")
        if fld.type == "text" and fld.max_length is None:
            raise ConfigError(path, key + ".max_length", "a text field needs max_length",
                              "add max_length = 500 so constrained output always closes")
        if fld.type != "text" and fld.max_length is not None:
            raise ConfigError(path, key + ".max_length", "max_length only applies to text fields", "remove it")
    for name, value in answer.fallback.items():
        fld = answer.fields.get(name)
        key = f"answer.fallback.{key_part(name)}"
        if fld is None:
            raise ConfigError(path, key, "fallback for a field that is not in [answer.fields]",
                              f"use one of: {', '.join(answer.fields)}")
        expected = {"choice": str, "text": str, "bool": bool, "int": int, "number": (int, float)}[fld.type]
        if not isinstance(value, expected) or (fld.type in ("int", "number") and isinstance(value, bool)):
            raise ConfigError(path, key, f"fallback {value!r} does not fit a {fld.type} field",
                              "give a value of the field's type")


def _same_table(a: str, b: str, database: str | None) -> bool:
    """Do two table names (optionally database.table) name one table? Case-blind: it is a refusal, so err wide."""
    def parts(name: str) -> tuple[str | None, str]:
        db, _, table = name.rpartition(".")
        return (db or database or None), table

    (da, ta), (db_, tb) = parts(a.lower()), parts(b.lower())
    return ta == tb and (da is None or db_ is None or da == db_)


def _unit_key_columns(source: SourceSection) -> list[str]:
    return source.group_by or source.id_columns


def _check_source(path: Path, source: SourceSection) -> None:
    if bool(source.table) == bool(source.query):
        raise ConfigError(path, "source.table", "give exactly one of table or query",
                          "table = \"notes\" for a whole table, or query = \"SELECT …\"")
    if source.table and not QUALIFIED_IDENT.match(source.table):
        raise ConfigError(path, "source.table", f"{source.table!r} is not a plain table name",
                          "use letters, digits and _ (optionally database.table)")
    if source.query:
        _check_one_select(path, "source.query", source.query)
    if source.where is not None and (";" in source.where or not source.where.strip()):
        raise ConfigError(path, "source.where", "where must be one SQL condition without ';'",
                          'e.g. where = "note_date >= \'2024-01-01\'"')
    if source.group_by:
        if source.id_columns and source.id_columns != source.group_by:
            raise ConfigError(path, "source.id_columns", "with group_by, a unit is identified by the group",
                              "set id_columns equal to group_by, or leave id_columns out")
        extra = [c for c in source.columns if c not in source.group_by]
        if extra:
            raise ConfigError(path, "source.columns", f"column {extra[0]!r} differs between the notes of a group",
                              "with group_by, only group_by columns can be used in the prompt")
    elif not source.id_columns:
        raise ConfigError(path, "source.id_columns", "required key is missing",
                          'add id_columns = ["note_id"]: the columns that identify one note')
    if source.order_by and not source.group_by:
        raise ConfigError(path, "source.order_by", "order_by orders the notes inside a group", "add group_by, or remove it")
    for key in ("id_columns", "columns", "group_by", "order_by"):
        for col in getattr(source, key):
            if not IDENT.match(col):
                raise ConfigError(path, f"source.{key}", f"{col!r} is not a plain column name",
                                  "use letters, digits and _")
    if not IDENT.match(source.text_column):
        raise ConfigError(path, "source.text_column", f"{source.text_column!r} is not a plain column name",
                          "use letters, digits and _")
    if source.database is not None and not IDENT.match(source.database):
        raise ConfigError(path, "source.database", f"{source.database!r} is not a plain database name",
                          "use letters, digits and _")


def _check_one_select(path: Path, key: str, query: str) -> None:
    q = query.strip().rstrip(";").strip()
    if not re.match(r"(?is)^(select|with)\b", q) or ";" in q:
        raise ConfigError(path, key, "the query must be one SELECT statement",
                          "remove other statements; notes-tui adds its own joins around it")


EVALUATION_KEYS = {name: f"evaluation.{name}" for name in EvaluationSection.model_fields}


def check_evaluation(path: Path, spec: ExperimentFile, ev: EvaluationSection,
                     keys: dict[str, str] = EVALUATION_KEYS) -> EvaluationSection:
    """[evaluation] checked against the answer and the source, with `field` filled in. `keys` names each setting as
    the user gave it (a key of the file, or a command-line option that overrides it)."""
    if bool(ev.gold_column) == bool(ev.gold_query):
        raise ConfigError(path, keys["gold_column"], "give exactly one of gold_column or gold_query",
                          'gold_column = "gold_label" (a column of the source), or gold_query = "SELECT <id columns>, '
                          '<label> FROM …"')
    if ev.gold_column is not None:
        if not IDENT.match(ev.gold_column):
            raise ConfigError(path, keys["gold_column"], f"{ev.gold_column!r} is not a plain column name",
                              "use letters, digits and _")
        if spec.source.group_by:
            raise ConfigError(path, keys["gold_column"], "with group_by a unit is a group of notes, and a column can "
                              "differ between them", f"use gold_query returning {', '.join(spec.source.group_by)} and "
                              "one label per group")
    if ev.gold_query is not None:
        _check_one_select(path, keys["gold_query"], ev.gold_query)
    scorable = [n for n, f in spec.answer.fields.items() if f.type in ("choice", "bool")]
    name = ev.field
    if name is None:
        if len(scorable) != 1:
            raise ConfigError(path, keys["field"], "no choice or bool field to score" if not scorable else
                              f"several fields could be scored ({', '.join(scorable)})",
                              "add a choice or bool field to [answer.fields]" if not scorable else
                              f'add field = "{scorable[0]}" to [evaluation]')
        name = scorable[0]
    elif name not in scorable:
        raise ConfigError(path, keys["field"], f"{name!r} is not a choice or bool field of [answer.fields]",
                          f"use one of: {', '.join(scorable) or '(none: add a choice field)'}")
    fld = spec.answer.fields[name]
    for gold, value in ev.map.items():
        where = f"evaluation.map.{gold}" if keys is EVALUATION_KEYS else keys["map"]
        if fld.type == "choice" and value not in (fld.choices or []):
            raise ConfigError(path, where, f"{value!r} is not a choice of {name}",
                              f"map {gold!r} to one of: {', '.join(fld.choices or [])}")
        if fld.type == "bool" and not isinstance(value, bool):
            raise ConfigError(path, where, f"{value!r} is not true or false, and {name} is a bool field",
                              f"map {gold!r} to true or false")
    return ev.model_copy(update={"field": name})


def _check_prompt(path: Path, spec: ExperimentFile) -> None:
    _check_template(path, spec, "prompt.user", spec.prompt.user)
    if spec.study is not None:
        for name, variant in spec.study.prompts.items():
            if variant.user is not None:
                _check_template(path, spec, f"study.prompts.{key_part(name)}.user", variant.user)


def _check_template(path: Path, spec: ExperimentFile, key: str, template: str) -> None:
    try:
        fields = template_fields(template)
    except ValueError as exc:
        raise ConfigError(path, key, str(exc), "write {note} or {column}; write {{ and }} for literal braces")
    if "note" not in fields:
        raise ConfigError(path, key, "the template never uses {note}", "put {note} where the note goes")
    available = {"note", *_unit_key_columns(spec.source), *spec.source.columns}
    for name in fields:
        if name not in available:
            raise ConfigError(path, key, f"placeholder {{{name}}} is not provided by the source",
                              f"add {name!r} to [source].columns, or use one of: {', '.join(sorted(available))}")
