"""The answer model built from [answer]: one pydantic model whose JSON schema constrains the model's output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError, create_model

from app.experiment.schema import AnswerSection

# Answer fields whose values may go into the ledger: labels and numbers, never free text.
PUBLIC_TYPES = {"choice", "bool", "int", "number"}


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one reply: `values` when valid, else an `error` kind (json, schema, cutoff, blank,
    thinking; the run adds too_long for a prompt the server refused; ledger.reasons says each in words) and, for
    people (`notes-tui try`), what was wrong — the field and pydantic's message, never the reply's text. The engine
    records only the kind."""

    values: dict[str, Any] | None
    error: str | None = None
    detail: str | None = None


class AnswerSpec:
    def __init__(self, section: AnswerSection):
        self.section = section
        self.model = _build_model(section)
        self.schema: dict[str, Any] = self.model.model_json_schema()
        self.public_fields = tuple(n for n, f in section.fields.items() if f.type in PUBLIC_TYPES)
        self.fallback = {name: section.fallback.get(name) for name in section.fields}

    def check(self, content: str, cut_off: bool = False, thought: bool = False) -> Verdict:
        if not content.strip():
            if thought:
                return Verdict(None, "thinking", "the model answered only in its thinking: no answer after it")
            return Verdict(None, "cutoff" if cut_off else "blank", "the reply was empty")
        try:
            answer = self.model.model_validate_json(content)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            kind = first["type"]
            if kind == "json_invalid" and not cut_off:
                # a server that ignores `format` wraps the object in ```json fences or a sentence: the object
                # itself is still the model's answer, and it is validated like any other
                inner = _embedded_object(content)
                if inner is not None:
                    try:
                        return Verdict(self.model.model_validate_json(inner).model_dump(by_alias=True))
                    except ValidationError:
                        pass
            where = ".".join(str(p) for p in first["loc"])
            detail = f"{where}: {first['msg']}" if where else first["msg"]
            if cut_off:
                return Verdict(None, "cutoff", f"the reply was cut off (done_reason length: raise num_predict): {detail}")
            return Verdict(None, "json" if kind == "json_invalid" else "schema", detail)
        return Verdict(answer.model_dump(by_alias=True))

    def public(self, values: dict[str, Any] | None) -> dict[str, Any]:
        if not values:
            return {}
        return {name: values[name] for name in self.public_fields if values.get(name) is not None}


def _embedded_object(content: str) -> str | None:
    start, end = content.find("{"), content.rfind("}")
    return content[start:end + 1] if 0 <= start < end else None


def _build_model(section: AnswerSection) -> type[BaseModel]:
    """The user's field names are the aliases; the model's own names are f0, f1, …, because a field named like a
    pydantic member (model_config, model_dump, schema, json, _x) would be read as config, refused, or warned about.
    The JSON schema is the same either way, and so is the prompt hash."""
    fields: dict[str, Any] = {}
    for i, (name, spec) in enumerate(section.fields.items()):
        info = Field(description=spec.description or None, alias=name)
        if spec.type == "choice":
            assert spec.choices
            annotation: Any = Literal[tuple(spec.choices)]  # type: ignore[valid-type]
        elif spec.type == "text":
            annotation = Annotated[str, Field(max_length=spec.max_length)]
        elif spec.type == "bool":
            annotation = StrictBool
        elif spec.type == "int":
            annotation = StrictInt
        else:
            annotation = float
        fields[f"f{i}"] = (annotation, info)
    return create_model("Answer", __config__=ConfigDict(extra="forbid"), **fields)
