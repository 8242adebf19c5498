"""Property-based tests (hypothesis) at the three doors hostile input comes through:

- the experiment loader, given random TOML documents (mutations of a valid experiment, arbitrary ones, arbitrary
  bytes): a valid Experiment or one ConfigError line, never another exception;
- the note decoder and the prompt renderer, given any note a clinical table can hold (any unicode, lone surrogates,
  UTF-8-encoded surrogates from Java exports, NUL bytes, braces and placeholders, 1 MB): text that can be sent, and
  a prompt that holds the note exactly as it is, nothing inside it evaluated;
- the answer validator, given any reply a model or a wrong server can send: a verdict, never an exception, and
  whatever it accepts fits the answer's fields.
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from app.engine.answer import PUBLIC_TYPES, AnswerSpec
from app.engine.prompt import Template
from app.errors import ConfigError
from app.experiment import load_experiment
from app.experiment.schema import AnswerSection
from app.sources.base import decode_note
from tests.helpers.support import experiment_toml

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- a small TOML writer: hypothesis builds values, this spells them ---------------------------------------------

# TOML strings may hold any scalar value but control characters (json.dumps escapes those below 0x20) and DEL
TOML_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x7f"), max_size=40)
SCALARS = (TOML_TEXT | st.integers(-(2**63), 2**63 - 1) | st.booleans()
           | st.floats(allow_nan=True, allow_infinity=True))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TOML_TEXT, inner, max_size=4),
                      max_leaves=12)


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(x)}" for k, x in v.items()) + "}"


def toml_document(d: dict) -> str:
    return "".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}\n" for k, v in d.items())


# -- the loader ------------------------------------------------------------------------------------------------

VALID = experiment_toml(source='kind = "sqlite"\npath = "notes.db"\ntable = "notes"\nid_columns = ["note_id"]\n'
                               'text_column = "note_text"', hosts=["http://127.0.0.1:9"])
BASE = tomllib.loads(VALID)


def paths(d: dict, prefix=()) -> list[tuple]:
    out = []
    for k, v in d.items():
        out.append((*prefix, k))
        if isinstance(v, dict):
            out += paths(v, (*prefix, k))
    return out


@st.composite
def mutated_experiments(draw) -> dict:
    """The valid experiment with a few keys replaced, removed or added, at any depth."""
    doc = json.loads(json.dumps(BASE))
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.sampled_from(paths(doc) or [("name",)]))
        parent = doc
        for k in where[:-1]:
            parent = parent.get(k) if isinstance(parent.get(k), dict) else None
            if parent is None:
                break
        if parent is None:
            continue
        op = draw(st.sampled_from(["set", "delete", "add"]))
        if op == "delete":
            parent.pop(where[-1], None)
        elif op == "set":
            parent[where[-1]] = draw(VALUES)
        else:
            parent[draw(TOML_TEXT | st.sampled_from(["hosts", "where", "query", "group_by", "gguf", "env_file"]))] = draw(VALUES)
    return doc


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("props")


def load_or_one_line(folder: Path, data: bytes) -> None:
    path = folder / "exp.toml"
    path.write_bytes(data)
    try:
        exp = load_experiment(path, environ={})
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(str(path)), str(exc)
    else:
        assert exp.name == exp.spec.name  # a valid one is a whole Experiment


@SETTINGS
@given(doc=mutated_experiments())
def test_the_loader_on_mutated_experiments(folder, doc):
    load_or_one_line(folder, toml_document(doc).encode())


@SETTINGS
@given(doc=st.dictionaries(TOML_TEXT, VALUES, max_size=8))
def test_the_loader_on_arbitrary_toml(folder, doc):
    load_or_one_line(folder, toml_document(doc).encode())


@SETTINGS
@given(data=st.binary(max_size=400) | st.text(max_size=400).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_the_loader_on_arbitrary_bytes(folder, data):
    load_or_one_line(folder, data)


def test_the_writer_spells_valid_toml_and_the_base_loads(folder):
    assert tomllib.loads(toml_document(BASE)) == BASE  # the writer is a faithful one
    load_or_one_line(folder, toml_document(BASE).encode())


# -- the note decoder and the prompt renderer ---------------------------------------------------------------

# any character, with the hostile ones (lone surrogates, NUL, braces) drawn often rather than once in a thousand
HOSTILE = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, blacklist_categories=()) | st.sampled_from("\x00{}\x7f")
ANY_TEXT = st.text(st.characters(blacklist_categories=()) | HOSTILE, max_size=300)
NOTE_BYTES = (st.binary(max_size=300)
              | ANY_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass"))  # CESU-style surrogates from Java exports
              | st.lists(st.sampled_from([b"\x00", b"\xed\xa0\x80", b"\xff", b"{note}", b"\xc3", "é".encode()]),
                         max_size=20).map(b"".join))
NOTE_VALUES = NOTE_BYTES | NOTE_BYTES.map(bytearray) | NOTE_BYTES.map(memoryview) | ANY_TEXT | st.none()


def check_decoded(value, text, replaced) -> None:
    assert text is None or isinstance(text, str)
    assert isinstance(replaced, int) and replaced >= 0
    if text is not None:
        assert "\x00" not in text and text.strip()
        text.encode("utf-8")  # sendable: no lone surrogate survives (llama.cpp encodes the prompt as UTF-8)
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            clean = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            assert replaced > 0
        else:
            assert replaced == 0 and text == (clean.replace("\x00", "") if clean.replace("\x00", "").strip() else None)


@SETTINGS
@given(value=NOTE_VALUES)
def test_the_decoder_takes_any_note(value):
    text, replaced = decode_note(value)
    check_decoded(value, text, replaced)


def test_the_decoder_takes_a_one_megabyte_note_of_bad_bytes():
    value = (b"FINDINGS {note} {0} \x00 \xff\xfe \xed\xa0\x80 " + "Ödem 🫁 ".encode()) * 20_000  # ~1 MB
    text, replaced = decode_note(value)
    check_decoded(value, text, replaced)
    assert replaced == 20_000 * 5  # \xff, \xfe and the three bytes of an encoded surrogate, each time


NAMES = st.sampled_from(["note", "patient", "modality"])
LITERAL = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)


@st.composite
def templates(draw) -> tuple[str, list[tuple[str, str | None]]]:
    """A template and its parts: literal text (braces doubled, as a user writes them) or a {name}."""
    parts: list[tuple[str, str | None]] = []
    for _ in range(draw(st.integers(1, 6))):
        parts.append((draw(LITERAL), draw(st.none() | NAMES)))
    text = "".join(lit.replace("{", "{{").replace("}", "}}") + (f"{{{name}}}" if name else "") for lit, name in parts)
    return text, parts


EVIL = st.sampled_from(["{note}", "{0}", "{__class__}", "{note.__init__.__globals__}", "%s", "%(note)s", "${note}",
                        "{{", "}}", "{", "}", "{!r}", "\\N{BULLET}", "\x00", "\ud800"])
FIELD_TEXT = st.lists(ANY_TEXT | EVIL, max_size=6).map("".join)


@SETTINGS
@given(template=templates(), values=st.fixed_dictionaries({"note": FIELD_TEXT, "patient": FIELD_TEXT | st.integers() | st.none(),
                                                            "modality": FIELD_TEXT}))
def test_the_renderer_puts_values_in_verbatim(template, values):
    text, parts = template
    expected = "".join(lit + ("" if name is None else "" if values[name] is None else str(values[name]))
                       for lit, name in parts)
    assert Template(text).render(values) == expected  # nothing inside a value is parsed, formatted or evaluated


@SETTINGS
@given(value=NOTE_VALUES)
def test_a_decoded_note_renders_into_a_sendable_prompt(value):
    text, _ = decode_note(value)
    assume(text is not None)
    prompt = Template("Does this note suggest pneumonia? Note: {note} (end)").render({"note": text})
    assert prompt == f"Does this note suggest pneumonia? Note: {text} (end)"
    prompt.encode("utf-8")


def test_a_one_megabyte_note_full_of_braces_renders_verbatim():
    note = ("{note} {0} {{}} }{ {__import__('os').system('x')} " * 20_000)[:1_000_000]
    out = Template("Q: {note}\nA:").render({"note": note})
    assert out == "Q: " + note + "\nA:" and len(out) == 1_000_006


# -- the answer validator ------------------------------------------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ANY_TEXT,
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
                    max_leaves=15)
# field names as a config allows them, with the ones pydantic itself uses (model_config, schema, …) drawn often
IDENTS = (st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)
          | st.sampled_from(["schema", "json", "copy", "model_config", "model_dump", "model_fields", "_x", "f0", "f1"])
          ).filter(lambda n: n.lower() not in {"valid", "attempts", "truncated", "experiment", "run_id", "model",
                                               "prompt_hash", "created_at"})


@st.composite
def answer_sections(draw) -> AnswerSection:
    fields = {}
    for name in draw(st.lists(IDENTS, min_size=1, max_size=4, unique=True)):
        kind = draw(st.sampled_from(["choice", "text", "bool", "int", "number"]))
        spec: dict = {"type": kind}
        if kind == "choice":
            spec["choices"] = draw(st.lists(st.text(min_size=1, max_size=20).filter(str.strip), min_size=1, max_size=5,
                                            unique=True))
        if kind == "text":
            spec["max_length"] = draw(st.integers(1, 50))
        fields[name] = spec
    return AnswerSection.model_validate({"fields": fields, "max_attempts": 2})


def answer_values(f) -> st.SearchStrategy:
    """Every value a field of this kind accepts."""
    if f.type == "choice":
        return st.sampled_from(f.choices)
    if f.type == "text":
        return st.text(max_size=f.max_length or 1)
    if f.type == "bool":
        return st.booleans()
    if f.type == "int":
        return st.integers(-(2**53), 2**53)
    return st.floats(allow_nan=False, allow_infinity=False)


def valid_answers(section: AnswerSection) -> st.SearchStrategy:
    return st.fixed_dictionaries({name: answer_values(f) for name, f in section.fields.items()})


def check_verdict(section: AnswerSection, spec: AnswerSpec, verdict) -> None:
    if verdict.values is None:
        assert verdict.error in ("json", "schema", "cutoff", "blank")  # "thinking" only with thought=True
        return
    assert set(verdict.values) == set(section.fields)
    for name, f in section.fields.items():
        v = verdict.values[name]
        if f.type == "choice":
            assert v in f.choices
        elif f.type == "text":
            assert isinstance(v, str) and len(v) <= f.max_length
        elif f.type == "bool":
            assert isinstance(v, bool)
        elif f.type == "int":
            assert isinstance(v, int) and not isinstance(v, bool)
        else:
            assert isinstance(v, float)
    assert set(spec.public(verdict.values)) <= {n for n, f in section.fields.items() if f.type in PUBLIC_TYPES}


REPLY_SHAPES = st.sampled_from(["{}", "```json\n{}\n```", "Here is the answer: {} Hope this helps.", "{}}", "[{}]"])


@SETTINGS
@given(section=answer_sections(), data=st.data(), cut_off=st.booleans())
def test_the_validator_on_any_reply(section, data, cut_off):
    spec = AnswerSpec(section)
    reply = data.draw(ANY_TEXT | JSON.map(json.dumps) | st.builds(
        lambda shape, obj: shape.replace("{}", json.dumps(obj, ensure_ascii=False)), REPLY_SHAPES, JSON)
        | st.just("[" * 5000 + "]" * 5000) | st.just('{"a": ' * 3000 + "1" + "}" * 3000))
    check_verdict(section, spec, spec.check(reply, cut_off=cut_off))


@SETTINGS
@given(section=answer_sections(), data=st.data())
def test_the_validator_takes_every_valid_answer_as_it_is(section, data):
    spec = AnswerSpec(section)
    answer = data.draw(valid_answers(section))
    wrapped = data.draw(REPLY_SHAPES).replace("{}", json.dumps(answer, ensure_ascii=False))
    assume(not wrapped.startswith("[") and not wrapped.endswith("}}"))  # those two shapes are broken on purpose
    verdict = spec.check(wrapped)
    check_verdict(section, spec, verdict)
    assert verdict.values == {k: float(v) if section.fields[k].type == "number" else v for k, v in answer.items()}
