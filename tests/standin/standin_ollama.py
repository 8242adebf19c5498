"""A stand-in Ollama HTTP server for tests and benchmarks (standard library only).

It speaks the parts of the Ollama REST protocol that notes-tui uses (version, tags, show, ps, chat, a minimal
generate, a streaming pull and delete), the OpenAI-compatible API beside it, and can be made slow, busy and wrong on
demand:

* ``slots`` requests are served at once (OLLAMA_NUM_PARALLEL), each holding its slot ``latency`` seconds
  (+ uniform ``jitter``); up to ``queue`` more wait FIFO (OLLAMA_MAX_QUEUE); beyond that -> ``busy_status`` (503,
  Ollama's; 429 is what vLLM/SGLang-style rate limiters send) at once.  ``load_seconds``: the model loads on the
  first answer after start (or on a chat with no messages, Ollama's load request), as Ollama's does, and every
  request that got a slot waits for it; once loaded, /api/ps lists it beside ``loaded``.
* ``invalid_rate`` / ``cutoff_rate`` / ``error_rate`` / ``hang_rate`` / ``drop_rate`` make answers wrong,
  cut off (done_reason "length"), HTTP 500, never answered (until the client goes away) or the connection
  closed mid-answer.  Outcomes are drawn in that order: error, hang, drop, cutoff, invalid (each with its own
  probability, from a ``random.Random(seed)``), and all of them happen after the request got its slot and
  held it for its latency (hang: forever).  Both APIs share this machinery.
* Answers are generated from the ``format`` JSON schema (OpenAI: ``response_format.json_schema.schema``),
  deterministically from the last user message.  Prompt tokens are estimated as characters / 4.
* ``POST /api/pull`` streams progress like Ollama (manifest, per-layer ``total``/``completed``, verifying, writing,
  success) over ``pull_seconds``, then the model is listed; names not in ``registry`` get Ollama's
  ``file does not exist`` error line; ``pull_fail_at`` (a fraction) ends a pull with a server-side error line there.
  ``DELETE /api/delete`` removes a model (404 when it is not there).
* ``models_dir`` (unset by default) keeps models as Ollama does in ``OLLAMA_MODELS``: a pull that succeeds writes each
  layer as ``blobs/sha256-<hex>`` (sparse files of the layer's size: they take no disk) and then
  ``manifests/registry.ollama.ai/library/<model>/<tag>``; /api/tags lists the manifests found there (read at each
  request, so a model another server pulled into the same directory shows), beside ``models``; delete removes the
  manifest. ``--models-dir -`` takes ``$OLLAMA_MODELS``.
* ``GET /v2/<namespace>/<model>/manifests/<tag>`` answers as Ollama's registry does: the manifest of a model in
  ``registry`` (the layers a pull fetches, with their sizes), 404 ``MANIFEST_UNKNOWN`` for any other.
* ``/api/ps`` lists the ``loaded`` models (all local models when unset), each expiring at ``expires_at`` (RFC 3339;
  unset: five minutes from now), with the num_ctx of the last chat to it as ``context_length`` (the
  ``context_length`` knob before any).

It behaves like the Ollama ``version`` it reports (default 0.11.10; versions compare numerically, 0.12.10 > 0.12.6):

* Thinking (>= 0.9 knows ``think``): a model whose name (after any "/", before the tag) starts with one of
  ``thinking_models`` can think; /api/show lists "thinking" in its ``capabilities``.  ``think`` true or a level
  sent for a model that cannot think -> 400 ``"<model as sent>" does not support thinking`` (before 0.12.5 Ollama
  named it ``registry.ollama.ai/library/<name:tag> does not support thinking``; 0.12.4 alone refused
  ``think: false`` too; later versions accept ``false`` anywhere).  Levels ("low"/"medium"/"high", from 0.11) only
  for gpt-oss*: elsewhere 400 ``think value "high" is not supported for this model``; other values -> 400.  gpt-oss
  always reasons, even with ``think: false``.  From 0.12.4 a thinking model thinks when ``think`` is absent.  A
  thinking answer carries ``message.thinking`` (/api/generate: ``thinking``) next to the content; with a ``format``
  the content is "" and only the thinking comes back (HarperFast/harper#1805), counted ``thinking_only``.
  Thinking and content share ``num_predict``: a small one can end in the thinking (content "", "length").
* ``truncate`` (>= 0.12.6, default true): ``"truncate": false`` with a prompt longer than num_ctx -> 400 ``the input
  length exceeds the context length`` (``too_long_400``, before taking a slot); otherwise the prompt is clipped to
  num_ctx (``truncated``).  Older versions ignore the field.
* Cloud models (>= 0.12.0): ``cloud_models`` (e.g. "gpt-oss:120b-cloud") are listed by /api/tags and shown by
  /api/show with ``remote_model`` / ``remote_host``; chats to them are answered here (same slots) but counted
  ``remote_chat``, so a test can assert that no note went to the cloud.  /api/ps leaves them out unless ``loaded``
  names them.

OpenAI-compatible API (non-streaming), served with the ``flavor`` "ollama" beside /api/*, as Ollama does:
``GET /v1/models`` and ``POST /v1/chat/completions`` (model, messages, response_format json_schema/json_object,
max_tokens, temperature, seed, top_p, reasoning_effort, chat_template_kwargs).  ``max_tokens`` plays num_predict
(finish_reason "length").  Each flavor answers in its own words:

* "ollama": errors ``{"error": {"message", "type", "param": null, "code": null}}`` (handler errors typed "api_error",
  as Ollama's middleware does); the context is the ``context_length`` knob and long prompts are clipped silently;
  ``reasoning_effort`` "none" -> think false, a level -> think level (chat_template_kwargs is ignored, as by Ollama);
  thinking comes back as ``message.reasoning``, and with a response_format the content is "".
* "vllm" (reports version 0.11.2): only ``/v1/*``, ``GET /health`` (200, empty) and ``GET /version``; anything else
  404 ``{"detail": "Not Found"}``.  Model names are matched as given (no ":latest").  Errors
  ``{"error": {"message", "type", "param": null, "code": <status>}}``; a prompt of ``context_length`` tokens or
  more, or prompt + max_tokens beyond it -> 400 in vLLM 0.11's words.  A thinking model (unless
  ``chat_template_kwargs.enable_thinking`` is false or ``reasoning_effort`` is "none") returns
  ``reasoning_content`` next to the content (structured output applies after the reasoning); only when max_tokens
  runs out in the reasoning is the content null.
* "llama-server": ``/v1/*``, ``GET /health``, ``GET /props``; anything else 404 in its words.  It serves whatever it
  loaded: the request's model name is not checked.  A prompt of n_ctx (``context_length``) tokens or more -> 400
  ``exceed_context_size_error``; generation stops at the end of the context ("length").  Reasoning as for vLLM.

``api_key`` (unset by default) requires ``Authorization: Bearer <key>`` (401 ``unauthorized_401``): on Ollama every
path but /health (as a proxy in front of it would), on vLLM the /v1 paths, on llama-server all but /health,
/v1/health, /models and /v1/models.

Use it in-process (``StandinOllama(...).start()``: asyncio loop in a daemon thread), as a subprocess
(``spawn_standin(...)``) or from the command line::

    python tests/standin/standin_ollama.py --port 0 --latency 0.2 --slots 4 --queue 512

which prints ``LISTENING http://127.0.0.1:PORT`` once it accepts connections.

Test-only endpoints: ``POST /_control`` (JSON with any knob, answers the full config; ``GET /_control`` reads
it), ``GET /_stats``, ``POST /_reset_stats``.  They are not counted in the stats and need no API key.

Import it as ``tests.standin.standin_ollama``; the child runs this file as a script, standard library only.
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import collections
import functools
import hashlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from email.utils import formatdate
from typing import Any, Self

__all__ = ["KNOBS", "StandinOllama", "StandinProcess", "main", "spawn_standin"]

BUSY_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"
ERROR_MESSAGE = "llama runner process has terminated: exit status 2 (stand-in error_rate)"
TOO_LONG_MESSAGE = "the input length exceeds the context length"
FLAVORS = ("ollama", "vllm", "llama-server")
VLLM_VERSION = "0.11.2"
LLAMA_BUILD = "b6000-standin"
CLOUD_HOST = "https://ollama.com:443"
THINKING_MODELS = ("qwen3", "deepseek-r1", "gpt-oss")
REGISTRY = ("llama3", "llama3.1:8b", "llama3.1:70b", "qwen2.5:7b", "mistral", "smollm2:135m")

#: knob name -> type; everything ``configure`` / ``POST /_control`` accepts.
KNOBS: dict[str, type] = {
    "latency": float,
    "jitter": float,
    "load_seconds": float,
    "slots": int,
    "queue": int,
    "invalid_rate": float,
    "cutoff_rate": float,
    "error_rate": float,
    "hang_rate": float,
    "drop_rate": float,
    "models": tuple,
    "version": str,
    "seed": int,
    "context_length": int,
    "pull_seconds": float,
    "pull_fail_at": float,
    "registry": tuple,
    "loaded": tuple,
    "expires_at": str,
    "thinking_models": tuple,
    "cloud_models": tuple,
    "flavor": str,
    "busy_status": int,
    "api_key": str,
    "models_dir": str,
}
_RATES = ("invalid_rate", "cutoff_rate", "error_rate", "hang_rate", "drop_rate")

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_MAX_HEADER = 64 * 1024
_MAX_BODY = 256 * 1024 * 1024
_MAX_DEPTH = 6
_WORDS = (  # noqa: SIM905 - a sentence reads better than 30 list items
    "stable patient denies chest pain reports mild cough no fever history of hypertension on metformin "
    "follow up in two weeks labs within normal limits imaging unremarkable discharged home with advice"
).split()
_LEVELS = ("high", "medium", "low")


# --------------------------------------------------------------------------------------------------------------
# knobs and model metadata
# --------------------------------------------------------------------------------------------------------------


def _normalize_model(name: str) -> str:
    """``llama3`` -> ``llama3:latest``; names with a tag are kept."""
    name = str(name).strip()
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


@functools.lru_cache(maxsize=64)
def _ver(version: str) -> tuple[int, ...]:
    """``"0.12.10"`` -> ``(0, 12, 10)``, for comparing versions numerically ("v" prefix and "-rc1" suffixes dropped)."""
    core = str(version).strip().lstrip("vV").split("-", 1)[0].split("+", 1)[0]
    out = []
    for part in core.split("."):
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        out.append(int(digits) if digits else 0)
    while len(out) < 3:
        out.append(0)
    return tuple(out)


def _coerce_knobs(knobs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in knobs.items():
        if key not in KNOBS:
            raise ValueError(f"unknown knob {key!r}; known: {', '.join(sorted(KNOBS))}")
        kind = KNOBS[key]
        if key == "loaded" and value is None:  # unset: /api/ps lists every model
            out[key] = None
            continue
        if kind is tuple:
            if isinstance(value, str):
                value = [v for v in value.split(",") if v.strip()]
            value = tuple(str(v).strip() for v in value)
        else:
            value = kind(value)
        if key in _RATES and not 0.0 <= value <= 1.0:
            raise ValueError(f"{key} must be within [0, 1], got {value}")
        if key in ("latency", "jitter", "load_seconds", "slots", "queue", "pull_seconds") and value < 0:
            raise ValueError(f"{key} must be >= 0, got {value}")
        if key == "context_length" and value < 1:
            raise ValueError(f"context_length must be >= 1, got {value}")
        if key == "flavor" and value not in FLAVORS:
            raise ValueError(f"flavor must be one of {', '.join(FLAVORS)}, got {value!r}")
        if key == "busy_status" and not 400 <= value <= 599:
            raise ValueError(f"busy_status must be an HTTP error status (400-599), got {value}")
        out[key] = value
    return out


def _rfc3339(ns: int | None = None) -> str:
    ns = time.time_ns() if ns is None else ns
    sec, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{frac:09d}Z"


_MODIFIED_AT = "2025-08-01T12:00:00.000000000Z"
_MODIFIED_UNIX = calendar.timegm(time.strptime(_MODIFIED_AT[:19], "%Y-%m-%dT%H:%M:%S"))


@functools.lru_cache(maxsize=256)
def _model_meta(full: str) -> dict[str, Any]:
    digest = hashlib.sha256(full.encode()).hexdigest()
    base, _, tag = full.rpartition(":")
    stem = base.rsplit("/", 1)[-1].lower()
    family = "".join(ch for ch in stem if ch.isalpha()) or "llama"
    size_b = 8.0
    for part in tag.lower().replace("_", "-").split("-"):
        if part.endswith("b"):
            try:
                size_b = float(part[:-1])
                break
            except ValueError:
                pass
    return {
        "name": full,
        "model": full,
        "digest": digest,
        "size": 500_000_000 + int(size_b * 520_000_000) + int(digest[:6], 16),
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": family,
            "families": [family],
            "parameter_size": f"{size_b:.1f}B",
            "quantization_level": "Q4_0",
        },
        "param_count": int(size_b * 1_000_000_000) + int(digest[6:12], 16),
    }


def _remote_name(full: str) -> str:
    """What a cloud model runs as on ollama.com: ``gpt-oss:120b-cloud`` -> ``gpt-oss:120b``, ``glm-4.6:cloud`` -> ``glm-4.6``."""
    base, _, tag = full.rpartition(":")
    if tag == "cloud":
        return base
    return f"{base}:{tag[: -len('-cloud')]}" if tag.endswith("-cloud") else full


@functools.lru_cache(maxsize=256)
def _cloud_meta(full: str) -> dict[str, Any]:
    return {**_model_meta(full), "size": 384, "remote_model": _remote_name(full), "remote_host": CLOUD_HOST}


def _stem(name: str) -> str:
    """The model's own name, lower case: ``hf.co/unsloth/Qwen3-8B-GGUF:Q4_K_M`` -> ``qwen3-8b-gguf``."""
    return str(name).rsplit("/", 1)[-1].split(":", 1)[0].lower()


def _is_harmony(name: str) -> bool:
    """gpt-oss speaks OpenAI's harmony format: it takes thinking levels and always reasons."""
    return _stem(name).startswith("gpt-oss")


def _fq_name(full: str) -> str:
    """Ollama's fully qualified name, as older versions put it in errors: ``registry.ollama.ai/library/llama3:latest``."""
    base, _, tag = full.rpartition(":")
    parts = base.split("/")
    if len(parts) == 1:
        parts = ["registry.ollama.ai", "library", *parts]
    elif len(parts) == 2:
        parts = ["registry.ollama.ai", *parts]
    return "/".join(parts) + ":" + tag


def _layers(full: str) -> list[tuple[str, int]]:
    """The layers a pull of ``full`` fetches, (digest, size), summing to the model's size."""
    meta = _model_meta(full)
    digest = meta["digest"]
    return [(f"sha256:{hashlib.sha256((digest + str(i)).encode()).hexdigest()}", size)
            for i, size in enumerate((meta["size"] - 12_000, 8_000, 3_000, 1_000))]


def _manifest(full: str) -> dict[str, Any]:
    layers = _layers(full)
    kinds = ("model", "template", "license", "params")
    return {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "digest": f"sha256:{hashlib.sha256(full.encode() + b'config').hexdigest()}", "size": 0},
            "layers": [{"mediaType": f"application/vnd.ollama.image.{kind}", "digest": d, "size": size}
                       for kind, (d, size) in zip(kinds, layers)]}


def _manifest_path(models_dir: str, full: str) -> str:
    host, namespace, rest = _fq_name(full).split("/", 2)
    model, _, tag = rest.rpartition(":")
    return os.path.join(models_dir, "manifests", host, namespace, model, tag)


def _dir_models(models_dir: str) -> list[str]:
    """The models whose manifests are in ``models_dir`` (Ollama names: ``llama3.1:8b``, ``user/model:tag``)."""
    root = os.path.join(models_dir, "manifests")
    out = []
    for folder, _, files in os.walk(root):
        parts = os.path.relpath(folder, root).split(os.sep)
        if len(parts) != 3:
            continue
        host, namespace, model = parts
        for tag in files:
            name = f"{model}:{tag}" if (host, namespace) == ("registry.ollama.ai", "library") else (
                f"{namespace}/{model}:{tag}" if host == "registry.ollama.ai" else f"{host}/{namespace}/{model}:{tag}")
            out.append(name)
    return sorted(out)


def _write_model(models_dir: str, full: str) -> None:
    """A pulled model as Ollama leaves it: its blobs (sparse), then its manifest."""
    manifest = _manifest(full)
    blobs = os.path.join(models_dir, "blobs")
    os.makedirs(blobs, exist_ok=True)
    for layer in (manifest["config"], *manifest["layers"]):
        with open(os.path.join(blobs, layer["digest"].replace(":", "-")), "wb") as f:
            f.truncate(layer["size"])
    path = _manifest_path(models_dir, full)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(manifest, f)


def _namespace(full: str) -> str:
    """``owned_by`` of Ollama's /v1/models: the name's namespace (``library`` for library models)."""
    parts = full.rpartition(":")[0].split("/")
    return parts[-2] if len(parts) >= 2 else "library"


def _go_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), "value")


def _bad_think(think: Any, version: tuple[int, ...], struct: str) -> str | None:
    """Ollama's complaint about a ``think`` value it cannot decode (None: fine, or ignored by this version)."""
    if think is None or isinstance(think, bool) or version < (0, 9, 0):
        return None
    if version < (0, 11, 0):  # think was a plain bool before gpt-oss brought levels
        return f"json: cannot unmarshal {_go_type(think)} into Go struct field {struct}.think of type bool"
    if isinstance(think, str):
        if think in _LEVELS:
            return None
        return f'invalid think value: {json.dumps(think)} (must be "high", "medium", "low", true, or false)'
    return 'think must be a boolean or string ("high", "medium", "low", true, or false)'


def _has_format(fmt: Any) -> bool:
    return (isinstance(fmt, dict) and bool(fmt)) or fmt == "json"


def _text_of(content: Any) -> str:
    """A message's text: a string, or OpenAI's list of content parts."""
    if isinstance(content, list):
        return "".join(str(p.get("text") or "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return str(content or "")


def _thought(note: str) -> str:
    """What a thinking model mulls over before it answers: deterministic prose from the note."""
    h = hashlib.blake2b(b"thinking:" + note.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    words = " ".join(_WORDS[b % len(_WORDS)] for b in h[:5])
    return (
        f"Let me consider the note. It mentions {words}. The user wants the requested fields, so I should go "
        "through them one by one, check each against the note and only then write the answer."
    )


# --------------------------------------------------------------------------------------------------------------
# answers from a JSON schema
# --------------------------------------------------------------------------------------------------------------


class _Gen:
    """Generates a valid instance of a JSON schema, deterministic in (note, path)."""

    def __init__(self, root: Any, note: str, break_enum: bool = False):
        self.root = root
        self.base = hashlib.blake2b(note.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        self.break_enum = break_enum  # the first enum met gets a value that is not allowed

    def h(self, path: str) -> int:
        return int.from_bytes(hashlib.blake2b(self.base + path.encode(), digest_size=8).digest(), "big")

    def resolve(self, schema: Any, depth: int = 0) -> Any:
        seen = 0
        while isinstance(schema, dict) and "$ref" in schema and seen < 32:
            ref = schema["$ref"]
            target: Any = self.root
            if ref.startswith("#"):
                for part in [p for p in ref[1:].split("/") if p]:
                    part = part.replace("~1", "/").replace("~0", "~")
                    target = target[int(part)] if isinstance(target, list) else target.get(part, {})
            else:
                target = {}
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **rest} if rest and isinstance(target, dict) else target
            seen += 1
        return schema

    def gen(self, schema: Any, path: str = "$", depth: int = 0) -> Any:
        schema = self.resolve(schema)
        if schema is True or schema is None or schema == {}:
            return self.text({}, path)
        if schema is False:
            return None
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            values = list(schema["enum"])
            if self.break_enum and values:
                self.break_enum = False
                return _not_in(values)
            return values[self.h(path) % len(values)] if values else None
        if "allOf" in schema:
            merged: dict[str, Any] = {}
            props: dict[str, Any] = {}
            required: list[str] = []
            for sub in schema["allOf"]:
                sub = self.resolve(sub)
                if isinstance(sub, dict):
                    merged.update(sub)
                    props.update(sub.get("properties", {}))
                    required += sub.get("required", [])
            merged.update({k: v for k, v in schema.items() if k != "allOf"})
            if props:
                merged["properties"] = {**props, **schema.get("properties", {})}
            if required:
                merged["required"] = sorted(set(required) | set(schema.get("required", [])))
            return self.gen(merged, path, depth)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                options = [self.resolve(o) for o in schema[key]]
                non_null = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
                if not non_null:
                    return None
                if depth >= _MAX_DEPTH and len(non_null) < len(options):
                    return None
                pick = non_null[0] if key == "oneOf" else non_null[self.h(path + "|") % len(non_null)]
                rest = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
                return self.gen({**rest, **pick} if isinstance(pick, dict) else pick, path, depth)
        kind = schema.get("type")
        if isinstance(kind, list):
            non_null = [k for k in kind if k != "null"]
            kind = non_null[0] if non_null else "null"
        if kind is None:
            kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
        if kind == "object":
            return self.obj(schema, path, depth)
        if kind == "array":
            return self.arr(schema, path, depth)
        if kind == "string":
            return self.text(schema, path)
        if kind == "integer":
            return self.integer(schema, path)
        if kind == "number":
            return self.number(schema, path)
        if kind == "boolean":
            return self.h(path) % 2 == 0
        return None

    def obj(self, schema: dict, path: str, depth: int) -> dict:
        props = schema.get("properties") or {}
        required = list(schema.get("required") or [])
        out: dict[str, Any] = {}
        for key, sub in props.items():
            if depth >= _MAX_DEPTH and key not in required:
                continue
            out[key] = self.gen(sub, f"{path}.{key}", depth + 1)
        for key in required:
            if key not in out:
                extra = schema.get("additionalProperties")
                out[key] = self.gen(extra if isinstance(extra, dict) else {}, f"{path}.{key}", depth + 1)
        return out

    def arr(self, schema: dict, path: str, depth: int) -> list:
        lo = int(schema.get("minItems", 0))
        hi = schema.get("maxItems")
        prefix = schema.get("prefixItems") or []
        n = max(lo, 0 if depth >= _MAX_DEPTH else max(1, len(prefix)))
        if hi is not None:
            n = min(n, int(hi))
        items = schema.get("items", {})
        out: list[Any] = []
        for i in range(n):
            sub = prefix[i] if i < len(prefix) else items
            value = self.gen(sub, f"{path}[{i}]", depth + 1)
            if schema.get("uniqueItems"):
                salt = 0
                while value in out and salt < 16:
                    salt += 1
                    value = self.gen(sub, f"{path}[{i}]#{salt}", depth + 1)
            out.append(value)
        return out

    def text(self, schema: dict, path: str) -> str:
        h = self.h(path)
        fmt = schema.get("format")
        if fmt == "date":
            value = f"2024-{h % 12 + 1:02d}-{h // 12 % 28 + 1:02d}"
        elif fmt == "date-time":
            value = f"2024-{h % 12 + 1:02d}-{h // 12 % 28 + 1:02d}T{h // 7 % 24:02d}:{h // 11 % 60:02d}:00Z"
        elif fmt == "time":
            value = f"{h // 7 % 24:02d}:{h // 11 % 60:02d}:00"
        elif fmt == "email":
            value = f"user{h % 1000}@example.org"
        elif fmt == "uuid":
            x = f"{h:016x}{h ^ 0x5DEECE66D:016x}"[-32:].rjust(32, "0")
            value = f"{x[:8]}-{x[8:12]}-4{x[13:16]}-8{x[17:20]}-{x[20:32]}"
        elif fmt in ("uri", "url"):
            value = f"https://example.org/{h % 1000}"
        else:
            n = 2 + h % 5
            value = " ".join(_WORDS[(h >> (5 * i)) % len(_WORDS)] for i in range(n))
        lo = int(schema.get("minLength", 0))
        hi = schema.get("maxLength")
        if hi is not None:
            value = value[: int(hi)].rstrip() if int(hi) >= lo else value[: int(hi)]
        if len(value) < lo:
            value = value + "x" * (lo - len(value))
        return value

    @staticmethod
    def _bounds(schema: dict) -> tuple[float | None, float | None, bool, bool]:
        lo, hi = schema.get("minimum"), schema.get("maximum")
        xlo, xhi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        lo_x = hi_x = False
        if isinstance(xlo, bool):
            lo_x = xlo
        elif xlo is not None and (lo is None or xlo >= lo):
            lo, lo_x = xlo, True
        if isinstance(xhi, bool):
            hi_x = xhi
        elif xhi is not None and (hi is None or xhi <= hi):
            hi, hi_x = xhi, True
        return lo, hi, lo_x, hi_x

    def integer(self, schema: dict, path: str) -> int:
        lo, hi, lo_x, hi_x = self._bounds(schema)
        ilo = None if lo is None else (math.floor(lo) + 1 if lo_x else math.ceil(lo))
        ihi = None if hi is None else (math.ceil(hi) - 1 if hi_x else math.floor(hi))
        if ilo is None and ihi is None:
            ilo, ihi = 0, 100
        elif ilo is None:
            ilo = min(0, ihi) if ihi >= 0 else ihi - 100
        elif ihi is None:
            ihi = max(ilo + 100, 100) if ilo < 100 else ilo + 100
        if ihi < ilo:
            return int(ilo)
        value = ilo + self.h(path) % (ihi - ilo + 1)
        step = schema.get("multipleOf")
        if step:
            step = int(step) if float(step).is_integer() else step
            up = math.ceil(value / step) * step
            down = math.floor(value / step) * step
            value = up if up <= ihi else down
            value = int(value)
        return int(value)

    def number(self, schema: dict, path: str) -> float:
        lo, hi, lo_x, hi_x = self._bounds(schema)
        if lo is None and hi is None:
            lo, hi = 0.0, 100.0
        elif lo is None:
            lo = min(0.0, hi - 100.0)
        elif hi is None:
            hi = lo + 100.0
        lo, hi = float(lo), float(hi)
        if hi <= lo:
            return lo
        value = round(lo + (self.h(path) % 1000) / 1000 * (hi - lo), 2)
        if value < lo or (lo_x and value == lo) or value > hi or (hi_x and value == hi):
            value = (lo + hi) / 2
        step = schema.get("multipleOf")
        if step:
            k = math.ceil(lo / step)
            value = k * step if k * step <= hi else lo
            if float(step).is_integer():
                value = float(int(value))
        return value


def _not_in(values: list) -> Any:
    """A near miss for an enum: what an LLM writes when it ignores the allowed values."""
    first = values[0]
    if isinstance(first, str):
        for cand in (first.upper(), first.capitalize(), first.lower(), f"{first}.", f"not {first}", "unknown"):
            if cand not in values:
                return cand
        return "<not-an-allowed-value>"
    if isinstance(first, bool) or first is None:
        return "unknown"
    if isinstance(first, (int, float)):
        return max(v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)) + 1
    return "unknown"


def _broken(content: str) -> str:
    cut = content[: max(1, len(content) // 2)]
    try:
        json.loads(cut)
    except ValueError:
        return cut
    return '{"' + cut


def _answer(fmt: Any, note: str, *, bad_enum: bool = False) -> tuple[str, bool]:
    """(content, made_invalid) for a request.  ``bad_enum``: try to produce valid JSON with a wrong value."""
    if isinstance(fmt, dict) and fmt:
        gen = _Gen(fmt, note, break_enum=bad_enum)
        instance = gen.gen(fmt)
        content = json.dumps(instance, ensure_ascii=False)
        if bad_enum and gen.break_enum:  # no enum in the schema: drop a required key instead
            top = gen.resolve(fmt)
            req = top.get("required") if isinstance(top, dict) else None
            if isinstance(instance, dict) and req and req[0] in instance:
                instance.pop(req[0])
                return json.dumps(instance, ensure_ascii=False), True
            return _broken(content), True
        return content, bad_enum
    h = hashlib.blake2b(note.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    words = " ".join(_WORDS[b % len(_WORDS)] for b in h[:6])
    if fmt == "json":
        return json.dumps({"answer": words}), False
    return f"Stand-in answer: {words}.", False


# --------------------------------------------------------------------------------------------------------------
# the server core (runs inside one asyncio loop)
# --------------------------------------------------------------------------------------------------------------


class _Outcome(Exception):
    pass


class _Core:
    def __init__(self, config: dict[str, Any]):
        self.cfg = dict(config)
        self.rng = random.Random(self.cfg["seed"])
        self.active = 0
        self.waiters: collections.deque[asyncio.Future] = collections.deque()
        self.invalid_seq = 0
        self.drop_seq = 0
        self.conns: set[_Conn] = set()
        self.ctx: dict[str, int] = {}  # model -> num_ctx it was last loaded with (what /api/ps reports)
        self.loaded_at: float | None = None  # when the model finishes loading (load_seconds after the first answer)
        self.warm: set[str] = set()  # models loaded since start: /api/ps lists them
        self.reset_stats()
        self._date = ("", 0)

    # ---- stats / control ----
    def reset_stats(self) -> None:
        self.st: dict[str, Any] = {
            "requests": 0,
            "chat": 0,
            "generate": 0,
            "openai_chat": 0,
            "served": 0,
            "busy_503": 0,
            "busy_429": 0,
            "errors_500": 0,
            "not_found_404": 0,
            "bad_request_400": 0,
            "too_long_400": 0,
            "unauthorized_401": 0,
            "invalid": 0,
            "cutoff": 0,
            "truncated": 0,
            "hung": 0,
            "dropped": 0,
            "cancelled": 0,
            "think_sent": 0,
            "thinking_only": 0,
            "remote_chat": 0,
            "max_active": self.active,
            "max_queued": len(getattr(self, "waiters", ())),
            "max_connections": len(getattr(self, "conns", ())),
            "prompt_tokens": 0,
            "eval_tokens": 0,
            "by_model": {},
            "pulls": 0,
            "pulls_done": 0,
            "pulls_cancelled": 0,
            "deleted": 0,
        }

    def stats(self) -> dict[str, Any]:
        out = dict(self.st)
        out["by_model"] = dict(self.st["by_model"])
        out["active"] = self.active
        out["queued"] = len(self.waiters)
        out["connections"] = len(self.conns)
        out["process_cpu_s"] = time.process_time()
        return out

    def configure(self, knobs: dict[str, Any]) -> dict[str, Any]:
        knobs = _coerce_knobs(knobs)
        self.cfg.update(knobs)
        if "seed" in knobs:
            self.rng = random.Random(knobs["seed"])
        self._dispatch()
        return self.config()

    def config(self) -> dict[str, Any]:
        out = dict(self.cfg)
        out["models"] = list(out["models"])
        return out

    # ---- models ----
    def version(self) -> tuple[int, ...]:
        return _ver(self.cfg["version"])

    def models(self) -> dict[str, dict]:
        """Every model the server has (Ollama names): the local ones, then the cloud ones (Ollama >= 0.12.0)."""
        out = {full: _model_meta(full) for full in (_normalize_model(m) for m in self.cfg["models"])}
        if self.cfg["models_dir"]:
            for full in _dir_models(self.cfg["models_dir"]):
                out.setdefault(full, _model_meta(full))
        if self.version() >= (0, 12, 0):
            for full in (_normalize_model(m) for m in self.cfg["cloud_models"]):
                out.setdefault(full, _cloud_meta(full))
        return out

    def served(self) -> list[str]:
        """The model names an OpenAI-compatible server (vLLM, llama-server) serves: as configured, no ":latest"."""
        return list(dict.fromkeys(str(m).strip() for m in self.cfg["models"]))

    def can_think(self, name: str) -> bool:
        if self.cfg["flavor"] == "ollama" and self.version() < (0, 9, 0):
            return False
        stem = _stem(name)
        return any(stem.startswith(t.lower()) for t in self.cfg["thinking_models"] if t)

    def ollama_thinking(self, name: str, full: str, think: Any, *, is_chat: bool) -> tuple[str | None, bool]:
        """(Ollama's 400 message or None, whether the model thinks) for a request's decoded ``think`` value."""
        v = self.version()
        if v < (0, 9, 0):
            return None, False
        can = self.can_think(full)
        harmony = can and _is_harmony(full)
        level = isinstance(think, str)
        on = think is True or think in _LEVELS  # Go's ThinkValue.Bool()
        level_error = f"think value {json.dumps(think)} is not supported for this model"
        if not is_chat and level and not harmony:  # /api/generate checks the level first
            return level_error, False
        if not can and (on or (v == (0, 12, 4) and think is not None)):  # 0.12.4 refused think: false too
            if v < (0, 12, 5):
                return f"{_fq_name(full)} does not support thinking", False
            return f"{json.dumps(name, ensure_ascii=False)} does not support thinking", False
        if level and not harmony:
            return level_error, False
        if harmony:
            return None, True
        if think is not None:
            return None, on
        return None, can and v >= (0, 12, 4)

    async def load(self, model: str) -> None:
        """The model loads once, `load_seconds` from the first request that needs it; every request waits for it.
        (Without load_seconds nothing loads, and /api/ps says what ``loaded`` says.)"""
        if self.cfg["load_seconds"] <= 0:
            return
        now = time.monotonic()
        if self.loaded_at is None:
            self.loaded_at = now + self.cfg["load_seconds"]
        if self.loaded_at > now:
            await asyncio.sleep(self.loaded_at - now)
        self.warm.add(model)

    # ---- slots ----
    def _dispatch(self) -> None:
        while self.waiters and self.active < self.cfg["slots"]:
            fut = self.waiters.popleft()
            if fut.done():
                continue
            self.active += 1
            fut.set_result(None)
        self.st["max_active"] = max(self.st["max_active"], self.active)

    def release(self) -> None:
        self.active -= 1
        self._dispatch()

    async def acquire(self) -> bool:
        """True when a slot was taken; False when the queue is full (-> busy_status)."""
        if self.active < self.cfg["slots"] and not self.waiters:
            self.active += 1
            self.st["max_active"] = max(self.st["max_active"], self.active)
            return True
        if len(self.waiters) >= self.cfg["queue"]:
            return False
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        self.st["max_queued"] = max(self.st["max_queued"], len(self.waiters))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was granted just before we were cancelled
            else:
                try:
                    self.waiters.remove(fut)
                except ValueError:
                    pass
            raise
        return True

    def http_date(self) -> str:
        now = int(time.time())
        if self._date[1] != now:
            self._date = (formatdate(now, usegmt=True), now)
        return self._date[0]


def _json(status: int, obj: Any) -> tuple[int, str, bytes]:
    return status, "application/json; charset=utf-8", json.dumps(obj, ensure_ascii=False).encode()


def _err(status: int, message: str) -> tuple[int, str, bytes]:
    return _json(status, {"error": message})


_VLLM_TYPES = {400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError", 429: "RateLimitError",
               500: "InternalServerError", 503: "ServiceUnavailableError"}
_LLAMA_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                429: "unavailable_error", 500: "server_error", 501: "not_supported_error", 503: "unavailable_error"}


def _oai_err(flavor: str, status: int, message: str, kind: str | None = None) -> tuple[int, str, bytes]:
    """An OpenAI-style error in the words of the flavor's server."""
    if flavor == "vllm":
        return _json(status, {"error": {"message": message, "type": kind or _VLLM_TYPES.get(status, "InternalServerError"),
                                        "param": None, "code": status}})
    if flavor == "llama-server":
        return _json(status, {"error": {"code": status, "message": message,
                                        "type": kind or _LLAMA_TYPES.get(status, "server_error")}})
    # Ollama's openai middleware: its own checks say invalid_request_error, the chat handler's errors api_error
    return _json(status, {"error": {"message": message, "type": kind or "api_error", "param": None, "code": None}})


class _Conn(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection; requests are handled one after another (pipelining works)."""

    def __init__(self, core: _Core):
        self.core = core
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task | None = None
        self.closed = False
        self.gone: asyncio.Future | None = None
        self.head: tuple | None = None  # parsed request head waiting for its body

    # ---- transport callbacks ----
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.gone = asyncio.get_running_loop().create_future()
        self.core.conns.add(self)
        self.core.st["max_connections"] = max(self.core.st["max_connections"], len(self.core.conns))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.core.conns.discard(self)
        if self.gone is not None and not self.gone.done():
            self.gone.set_result(None)
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.task is None:
            self._pump()

    # ---- parsing ----
    def _pump(self) -> None:
        while not self.closed and self.task is None:
            req = self._parse()
            if req is None:
                return
            method, path, headers, body, keep = req
            denied = self._denied(path, headers)
            if denied is not None:
                self._send(*denied, keep=keep, head_only=method == "HEAD")
                continue
            ollama = self.core.cfg["flavor"] == "ollama"
            if method == "POST" and (path == "/v1/chat/completions" or
                                     (ollama and path in ("/api/chat", "/api/generate", "/api/pull"))):
                if path == "/api/pull":
                    handler = self._pull(body, keep)
                elif path == "/v1/chat/completions":
                    handler = self._openai_chat(body, keep)
                else:
                    handler = self._chat(path, headers, body, keep)
                self.task = asyncio.ensure_future(handler)
                self.task.add_done_callback(self._done)
                return
            self._send(*self._simple(method, path, body), keep=keep, head_only=method == "HEAD")

    def _denied(self, path: str, headers: dict) -> tuple[int, str, bytes] | None:
        """The 401 for a request without the API key (None: let it in)."""
        key, flavor = self.core.cfg["api_key"], self.core.cfg["flavor"]
        if not key or path.startswith("/_"):
            return None
        if flavor == "vllm" and not path.startswith("/v1"):  # vLLM's middleware guards /v1 only
            return None
        if path in (("/health", "/v1/health", "/models", "/v1/models") if flavor == "llama-server" else ("/health",)):
            return None
        if headers.get("authorization", "") == f"Bearer {key}":
            return None
        self.core.st["requests"] += 1
        self.core.st["unauthorized_401"] += 1
        if flavor == "vllm":
            return _json(401, {"error": "Unauthorized"})
        if flavor == "llama-server":
            return _oai_err(flavor, 401, "Invalid API Key")
        if path.startswith("/v1/"):
            return _json(401, {"error": {"message": "Invalid API key", "type": "AuthenticationError", "code": 401}})
        return _err(401, "unauthorized")

    def _done(self, task: asyncio.Task) -> None:
        self.task = None
        if not task.cancelled() and task.exception() is not None:
            if not self.closed:
                self._send(*_err(500, f"stand-in bug: {task.exception()!r}"), keep=False)
            return
        if not self.closed and self.buf:
            self._pump()

    def _parse(self):
        if self.head is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > _MAX_HEADER:
                    self._send(*_err(431, "request header too large"), keep=False)
                return None
            lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            del self.buf[: end + 4]
            while lines and not lines[0]:
                lines.pop(0)
            try:
                method, target, version = lines[0].split(" ", 2)
            except (ValueError, IndexError):
                self._send(*_err(400, "malformed request line"), keep=False)
                return None
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            conn_hdr = headers.get("connection", "").lower()
            keep = ("close" not in conn_hdr) if version == "HTTP/1.1" else ("keep-alive" in conn_hdr)
            chunked = "chunked" in headers.get("transfer-encoding", "").lower()
            try:
                length = int(headers.get("content-length", "0") or 0)
            except ValueError:
                self._send(*_err(400, "bad content-length"), keep=False)
                return None
            if length > _MAX_BODY:
                self._send(*_err(413, "request body too large"), keep=False)
                return None
            path = target.split("?", 1)[0]
            self.head = (method.upper(), path, headers, keep, chunked, length)
        method, path, headers, keep, chunked, length = self.head
        if chunked:
            body = self._dechunk()
            if body is None:
                return None
        else:
            if len(self.buf) < length:
                return None
            body = bytes(self.buf[:length])
            del self.buf[:length]
        self.head = None
        return method, path, headers, body, keep

    def _dechunk(self) -> bytes | None:
        pos, parts = 0, []
        buf = self.buf
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(bytes(buf[pos:eol]).split(b";")[0].strip() or b"0", 16)
            pos = eol + 2
            if size == 0:
                end = buf.find(b"\r\n\r\n", pos - 2)  # trailers end with an empty line
                if end < 0:
                    return None
                del buf[: end + 4]
                return b"".join(parts)
            if len(buf) < pos + size + 2:
                return None
            parts.append(bytes(buf[pos : pos + size]))
            pos += size + 2

    # ---- writing ----
    def _send(self, status: int, ctype: str, body: bytes, *, keep: bool, head_only: bool = False) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            return
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
            f"Content-Type: {ctype}\r\nDate: {self.core.http_date()}\r\nContent-Length: {len(body)}\r\n"
            + ("" if keep else "Connection: close\r\n")
            + "\r\n"
        ).encode()
        self.transport.write(head if head_only else head + body)
        if not keep:
            self.transport.close()
            self.closed = True

    def _send_ndjson(self, objs: list[dict], *, keep: bool) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            return
        out = [
            (
                "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                f"Date: {self.core.http_date()}\r\nTransfer-Encoding: chunked\r\n"
                + ("" if keep else "Connection: close\r\n")
                + "\r\n"
            ).encode()
        ]
        for obj in objs:
            line = json.dumps(obj, ensure_ascii=False).encode() + b"\n"
            out.append(b"%x\r\n%s\r\n" % (len(line), line))
        out.append(b"0\r\n\r\n")
        self.transport.write(b"".join(out))
        if not keep:
            self.transport.close()
            self.closed = True

    # ---- endpoints ----
    def _simple(self, method: str, path: str, body: bytes) -> tuple[int, str, bytes]:
        core = self.core
        if path.startswith("/_"):
            return self._control(method, path, body)
        core.st["requests"] += 1
        flavor = core.cfg["flavor"]
        if flavor == "vllm":
            return self._vllm_simple(method, path)
        if flavor == "llama-server":
            return self._llama_simple(method, path)
        get = method in ("GET", "HEAD")
        if path in ("/", "") and get:
            return 200, "text/plain; charset=utf-8", b"Ollama is running"
        if path == "/api/version" and get:
            return _json(200, {"version": core.cfg["version"]})
        if path == "/api/tags" and get:
            models = [
                {k: m[k] for k in ("name", "model")}
                | {k: m[k] for k in ("remote_model", "remote_host") if k in m}
                | {"modified_at": _MODIFIED_AT, "size": m["size"], "digest": m["digest"], "details": m["details"]}
                for m in core.models().values()
            ]
            return _json(200, {"models": models})
        if path == "/api/ps" and get:
            expires = core.cfg["expires_at"] or _rfc3339(time.time_ns() + 300 * 1_000_000_000)
            loaded = core.cfg["loaded"]
            if loaded is None:  # cloud models run on ollama.com, not here
                shown = {full: meta for full, meta in core.models().items() if "remote_host" not in meta}
            else:
                wanted = {_normalize_model(m) for m in loaded} | core.warm
                shown = {full: meta for full, meta in core.models().items() if full in wanted}
            models = [
                {
                    "name": m["name"],
                    "model": m["model"],
                    "size": m["size"],
                    "digest": m["digest"],
                    "details": m["details"],
                    "expires_at": expires,
                    "size_vram": m["size"],
                    "context_length": core.ctx.get(m["name"], core.cfg["context_length"]),
                }
                for m in shown.values()
            ]
            return _json(200, {"models": models})
        if path == "/api/show" and method == "POST":
            try:
                req = json.loads(body or b"{}")
            except ValueError as e:
                core.st["bad_request_400"] += 1
                return _err(400, f"invalid JSON: {e}")
            name = str(req.get("model") or req.get("name") or "")
            meta = core.models().get(_normalize_model(name)) if name else None
            if meta is None:
                core.st["not_found_404"] += 1
                return _err(404, f"model '{name}' not found")
            return _json(200, self._show(meta))
        if path == "/api/delete" and method == "DELETE":
            try:
                req = json.loads(body or b"{}")
            except ValueError as e:
                core.st["bad_request_400"] += 1
                return _err(400, f"invalid JSON: {e}")
            name = str(req.get("model") or req.get("name") or "")
            full = _normalize_model(name) if name else ""
            if full not in core.models():
                core.st["not_found_404"] += 1
                return _err(404, f"model '{name}' not found")
            core.cfg["models"] = tuple(m for m in core.cfg["models"] if _normalize_model(m) != full)
            if core.cfg["models_dir"]:
                try:
                    os.unlink(_manifest_path(core.cfg["models_dir"], full))
                except FileNotFoundError:
                    pass
            if full in {_normalize_model(m) for m in core.cfg["cloud_models"]}:
                core.cfg["cloud_models"] = tuple(m for m in core.cfg["cloud_models"] if _normalize_model(m) != full)
            core.ctx.pop(full, None)
            core.st["deleted"] += 1
            return 200, "application/json; charset=utf-8", b""
        if path.startswith("/v2/") and path.count("/manifests/") == 1 and get:
            repo, _, tag = path[len("/v2/"):].partition("/manifests/")
            namespace, _, model = repo.rpartition("/")
            full = f"{model}:{tag}" if namespace == "library" else f"{namespace}/{model}:{tag}"
            if full not in {_normalize_model(m) for m in core.cfg["registry"]}:
                core.st["not_found_404"] += 1
                return _json(404, {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]})
            return _json(200, _manifest(full))
        if path == "/v1/models" and get:
            data = [{"id": full, "object": "model", "created": _MODIFIED_UNIX, "owned_by": _namespace(full)}
                    for full in core.models()]
            return _json(200, {"object": "list", "data": data or None})  # Go's nil slice: null when empty
        if path.startswith("/api/"):
            known = ("/api/version", "/api/tags", "/api/ps", "/api/show", "/api/delete", "/api/pull")
            return _err(405 if path in known else 404, "not found")
        return 404, "text/plain; charset=utf-8", b"404 page not found"

    def _vllm_simple(self, method: str, path: str) -> tuple[int, str, bytes]:
        core = self.core
        if path in ("/health", "/version", "/v1/models", "/v1/chat/completions") and method not in ("GET", "HEAD"):
            return _json(405, {"detail": "Method Not Allowed"})
        if path == "/health":
            return 200, "text/plain; charset=utf-8", b""
        if path == "/version":
            return _json(200, {"version": VLLM_VERSION})
        if path == "/v1/models":
            now = int(time.time())
            data = [{"id": name, "object": "model", "created": now, "owned_by": "vllm", "root": name, "parent": None,
                     "max_model_len": core.cfg["context_length"], "permission": []} for name in core.served()]
            return _json(200, {"object": "list", "data": data})
        core.st["not_found_404"] += 1
        return _json(404, {"detail": "Not Found"})

    def _llama_simple(self, method: str, path: str) -> tuple[int, str, bytes]:
        core = self.core
        get = method in ("GET", "HEAD")
        served = core.served()
        if path in ("/health", "/v1/health") and get:
            return _json(200, {"status": "ok"})
        if path == "/props" and get:
            n_ctx = core.cfg["context_length"]
            return _json(200, {
                "default_generation_settings": {"n_ctx": n_ctx, "params": {"n_predict": -1, "temperature": 0.8, "seed": -1}},
                "total_slots": core.cfg["slots"],
                "model_path": f"/models/{served[0]}.gguf" if served else "",
                "chat_template": "{{ messages }}",
                "build_info": LLAMA_BUILD,
            })
        if path in ("/models", "/v1/models") and get:
            now = int(time.time())
            n_ctx = core.cfg["context_length"]
            data = [{"id": name, "object": "model", "created": now, "owned_by": "llamacpp",
                     "meta": {"n_ctx_train": n_ctx, "n_vocab": 128256,
                              "n_params": _model_meta(_normalize_model(name))["param_count"]}}
                    for name in served]
            return _json(200, {"object": "list", "data": data})
        if path in ("/", "/index.html") and get:
            return 200, "text/html; charset=utf-8", b"<!doctype html><title>llama.cpp - chat</title>"
        core.st["not_found_404"] += 1
        return _oai_err("llama-server", 404, "File Not Found")

    def _show(self, meta: dict) -> dict:
        fam = meta["details"]["family"]
        out = {
            "license": "stand-in license",
            "modelfile": f"# Modelfile generated by the stand-in\nFROM {meta['name']}\n",
            "parameters": 'stop                           "<|eot_id|>"\nnum_ctx                        8192',
            "template": "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}"
            "<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response }}<|eot_id|>",
            "details": meta["details"],
            "model_info": {
                "general.architecture": fam,
                "general.basename": meta["name"].split(":")[0],
                "general.file_type": 2,
                "general.parameter_count": meta["param_count"],
                "general.quantization_version": 2,
                f"{fam}.context_length": 8192,
                f"{fam}.embedding_length": 4096,
                f"{fam}.block_count": 32,
                f"{fam}.attention.head_count": 32,
                f"{fam}.attention.head_count_kv": 8,  # llama3.1:8b's shape: 128 KiB of f16 KV cache a token
            },
            "tensors": [],
            "capabilities": ["completion", "tools", *(["thinking"] if self.core.can_think(meta["name"]) else [])],
            "modified_at": _MODIFIED_AT,
        }
        if "remote_host" in meta:
            out["remote_model"] = meta["remote_model"]
            out["remote_host"] = meta["remote_host"]
        return out

    def _control(self, method: str, path: str, body: bytes) -> tuple[int, str, bytes]:
        core = self.core
        if path == "/_stats" and method in ("GET", "HEAD"):
            return _json(200, core.stats())
        if path == "/_reset_stats" and method == "POST":
            core.reset_stats()
            return _json(200, core.stats())
        if path == "/_control" and method in ("GET", "HEAD"):
            return _json(200, core.config())
        if path == "/_control" and method == "POST":
            try:
                knobs = json.loads(body or b"{}")
                if not isinstance(knobs, dict):
                    raise TypeError("expected a JSON object of knobs")
                return _json(200, core.configure(knobs))
            except (ValueError, TypeError) as e:
                return _err(400, str(e))
        return _err(404, f"no control endpoint {method} {path}")

    def _start_stream(self, *, keep: bool) -> bool:
        if self.closed or self.transport is None or self.transport.is_closing():
            return False
        self.transport.write(
            (
                "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                f"Date: {self.core.http_date()}\r\nTransfer-Encoding: chunked\r\n"
                + ("" if keep else "Connection: close\r\n")
                + "\r\n"
            ).encode()
        )
        return True

    def _stream_line(self, obj: dict) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise asyncio.CancelledError()
        line = json.dumps(obj, ensure_ascii=False).encode() + b"\n"
        self.transport.write(b"%x\r\n%s\r\n" % (len(line), line))

    def _end_stream(self, *, keep: bool) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            return
        self.transport.write(b"0\r\n\r\n")
        if not keep:
            self.transport.close()
            self.closed = True

    async def _pull(self, body: bytes, keep: bool) -> None:
        """Ollama's streaming pull: per-layer progress lines, then the model is there."""
        core, st = self.core, self.core.st
        st["requests"] += 1
        try:
            req = json.loads(body or b"{}")
            name = str(req.get("model") or req.get("name") or "")
        except (ValueError, AttributeError) as e:
            st["bad_request_400"] += 1
            self._send(*_err(400, f"invalid JSON: {e}"), keep=keep)
            return
        if not name:
            st["bad_request_400"] += 1
            self._send(*_err(400, "model is required"), keep=keep)
            return
        st["pulls"] += 1
        full = _normalize_model(name)
        if not self._start_stream(keep=keep):
            return
        try:
            self._stream_line({"status": "pulling manifest"})
            if full not in {_normalize_model(m) for m in core.cfg["registry"]}:
                await asyncio.sleep(0.05)
                self._stream_line({"error": "pull model manifest: file does not exist"})
                self._end_stream(keep=keep)
                return
            layers = _layers(full)
            steps = max(1, int(core.cfg["pull_seconds"] / 0.05))
            fail_at = core.cfg["pull_fail_at"]
            for step in range(1, steps + 1):
                await asyncio.sleep(core.cfg["pull_seconds"] / steps)
                frac = step / steps
                if 0 < fail_at <= frac:
                    self._stream_line({"error": "max retries exceeded: unexpected EOF (stand-in pull_fail_at)"})
                    self._end_stream(keep=keep)
                    return
                for layer, size in layers:
                    self._stream_line({"status": f"pulling {layer[7:19]}", "digest": layer, "total": size,
                                       "completed": int(size * frac)})
            for status in ("verifying sha256 digest", "writing manifest", "success"):
                if status == "writing manifest" and core.cfg["models_dir"]:
                    _write_model(core.cfg["models_dir"], full)
                self._stream_line({"status": status})
            if full not in core.models():
                core.cfg["models"] = (*core.cfg["models"], full)
            st["pulls_done"] += 1
            self._end_stream(keep=keep)
        except asyncio.CancelledError:
            st["pulls_cancelled"] += 1
            raise


    # ---- generation: Ollama's /api/chat and /api/generate ----
    async def _chat(self, path: str, headers: dict, body: bytes, keep: bool) -> None:
        core, st, cfg = self.core, self.core.st, self.core.cfg
        t0 = time.perf_counter_ns()
        is_chat = path == "/api/chat"
        st["requests"] += 1
        st["chat" if is_chat else "generate"] += 1
        v = core.version()
        try:
            req = json.loads(body or b"{}")
            if not isinstance(req, dict):
                raise TypeError("expected a JSON object")
        except (ValueError, TypeError) as e:
            st["bad_request_400"] += 1
            self._send(*_err(400, f"invalid JSON: {e}"), keep=keep)
            return
        think, truncate = req.get("think"), req.get("truncate")
        if think is not None:
            st["think_sent"] += 1
        bad = _bad_think(think, v, "ChatRequest" if is_chat else "GenerateRequest")
        if bad is None and v >= (0, 12, 6) and truncate is not None and not isinstance(truncate, bool):
            bad = (f"json: cannot unmarshal {_go_type(truncate)} into Go struct field "
                   f"{'ChatRequest' if is_chat else 'GenerateRequest'}.truncate of type bool")
        if bad is not None:  # Go's JSON decoder refuses the body before anything else happens
            st["bad_request_400"] += 1
            self._send(*_err(400, bad), keep=keep)
            return
        name = str(req.get("model") or "")
        if not name:
            st["bad_request_400"] += 1
            self._send(*_err(400, "model is required"), keep=keep)
            return
        full = _normalize_model(name)
        st["by_model"][full] = st["by_model"].get(full, 0) + 1
        meta = core.models().get(full)
        if meta is None:
            st["not_found_404"] += 1
            self._send(*_err(404, f'model "{name}" not found, try pulling it first'), keep=keep)
            return
        if "remote_host" in meta:
            st["remote_chat"] += 1
        stream = req.get("stream", True) is not False
        fmt = req.get("format")
        options = req.get("options") or {}
        if is_chat:
            messages = req.get("messages") or []
            texts = [str(m.get("content") or "") for m in messages if isinstance(m, dict)]
            users = [str(m.get("content") or "") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
            note = users[-1] if users else (texts[-1] if texts else "")
            empty = not messages
        else:
            prompt = str(req.get("prompt") or "")
            texts = [str(req.get("system") or ""), prompt]
            note = prompt
            empty = not prompt
        if empty:  # real Ollama: an empty request just loads the model
            await core.load(full)
            reply = {"model": name, "created_at": _rfc3339(), "done": True, "done_reason": "load"}
            reply.update({"message": {"role": "assistant", "content": ""}} if is_chat else {"response": ""})
            self._send(*_json(200, reply), keep=keep)
            return
        problem, thinking = core.ollama_thinking(name, full, think, is_chat=is_chat)
        if problem is not None:
            st["bad_request_400"] += 1
            self._send(*_err(400, problem), keep=keep)
            return
        num_ctx = options.get("num_ctx") or cfg["context_length"]
        try:
            num_ctx = max(1, int(num_ctx))
        except (TypeError, ValueError):
            num_ctx = cfg["context_length"]
        prompt_tokens = max(1, sum(len(t) for t in texts) // 4)
        clipped = prompt_tokens > num_ctx
        if clipped and truncate is False and v >= (0, 12, 6):
            st["too_long_400"] += 1
            self._send(*_err(400, TOO_LONG_MESSAGE), keep=keep)
            return
        if clipped:
            prompt_tokens = num_ctx
        core.ctx[full] = num_ctx  # the runner is (re)loaded with this context
        remote = {k: meta[k] for k in ("remote_model", "remote_host") if k in meta}

        def reply(content: str, thought: str, done_reason: str, eval_tokens: int) -> None:
            total = max(1, time.perf_counter_ns() - t0)
            load = min(total // 10, 5_000_000)
            prompt_ns = (total - load) // 4
            message = {"role": "assistant", "content": content, **({"thinking": thought} if thought else {})}
            final = {
                "model": name,
                **remote,
                "created_at": _rfc3339(),
                **({"message": message} if is_chat else {"response": content, **({"thinking": thought} if thought else {})}),
                "done": True,
                "done_reason": done_reason,
                "total_duration": total,
                "load_duration": load,
                "prompt_eval_count": prompt_tokens,
                "prompt_eval_duration": prompt_ns,
                "eval_count": eval_tokens,
                "eval_duration": max(1, total - load - prompt_ns),
            }
            if not is_chat:
                final["context"] = [1, 2, 3]
            if not stream:
                self._send(*_json(200, final), keep=keep)
                return
            # like Ollama: thinking and content chunk(s) with done=false, then a final chunk with the stats
            head = {"model": name, **remote, "created_at": final["created_at"], "done": False}
            parts = []
            if thought:
                parts.append({**head, **({"message": {"role": "assistant", "content": "", "thinking": thought}}
                                         if is_chat else {"response": "", "thinking": thought})})
            if content or not thought:
                parts.append({**head, **({"message": {"role": "assistant", "content": content}}
                                         if is_chat else {"response": content})})
            if is_chat:
                final["message"] = {"role": "assistant", "content": ""}
            else:
                final["response"] = ""
                final.pop("thinking", None)
            self._send_ndjson([*parts, final], keep=keep)

        await self._serve(name=name, fmt=fmt, note=note, num_predict=options.get("num_predict"), think=thinking,
                          starve=True, prompt_tokens=prompt_tokens, clipped=clipped,
                          err=_err, reply=reply, keep=keep)

    # ---- generation: the OpenAI API (Ollama's /v1, vLLM, llama-server) ----
    async def _openai_chat(self, body: bytes, keep: bool) -> None:
        core, st, cfg = self.core, self.core.st, self.core.cfg
        flavor = cfg["flavor"]
        t0 = time.time()
        st["requests"] += 1
        st["openai_chat"] += 1

        def fail(status: int, message: str, kind: str | None = None, counter: str = "bad_request_400") -> None:
            st[counter] += 1
            self._send(*_oai_err(flavor, status, message, kind), keep=keep)

        invalid = "invalid_request_error" if flavor == "ollama" else None
        try:
            req = json.loads(body or b"{}")
            if not isinstance(req, dict):
                raise TypeError("expected a JSON object")
        except (ValueError, TypeError) as e:
            fail(400, f"invalid JSON: {e}", invalid)
            return
        if req.get("stream"):
            fail(400, "stream: true is not supported by the stand-in", invalid)
            return
        messages = req.get("messages")
        if not isinstance(messages, list) or not messages:
            fail(400, "[] is too short - 'messages'", invalid)
            return
        texts = [_text_of(m.get("content")) for m in messages if isinstance(m, dict)]
        users = [_text_of(m.get("content")) for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        note = users[-1] if users else (texts[-1] if texts else "")
        rf = req.get("response_format") if isinstance(req.get("response_format"), dict) else {}
        kind = str(rf.get("type") or "").strip().lower()
        js = rf.get("json_schema") if isinstance(rf.get("json_schema"), dict) else {}
        fmt = js.get("schema") if kind == "json_schema" else "json" if kind == "json_object" else None
        max_tokens = req.get("max_completion_tokens") if flavor == "vllm" else None
        max_tokens = req.get("max_tokens") if max_tokens is None else max_tokens
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0):
            fail(400, f"max_tokens must be a non-negative integer, got {max_tokens!r}", invalid)
            return
        effort = req.get("reasoning_effort")
        if effort is None and isinstance(req.get("reasoning"), dict):
            effort = req["reasoning"].get("effort")
        prompt_tokens = max(1, sum(len(t) for t in texts) // 4)
        n_ctx = cfg["context_length"]
        clipped = False
        extra: dict[str, Any] = {}

        if flavor == "ollama":
            v = core.version()
            think: Any = None
            if effort is not None and v >= (0, 12, 4):
                if effort not in (*_LEVELS, "none"):
                    fail(400, f"invalid reasoning value: '{effort}' (must be \"high\", \"medium\", \"low\", or \"none\")",
                         invalid)
                    return
                think = False if effort == "none" else effort
            elif effort is not None and v >= (0, 11, 0):  # 0.11.x passed it on as the think value, unchecked
                think = effort
            name = str(req.get("model") or "")
            if not name:
                fail(400, "model is required")
                return
            full = _normalize_model(name)
            st["by_model"][full] = st["by_model"].get(full, 0) + 1
            meta = core.models().get(full)
            if meta is None:
                fail(404, f'model "{name}" not found, try pulling it first', counter="not_found_404")
                return
            if "remote_host" in meta:
                st["remote_chat"] += 1
            problem, thinking = core.ollama_thinking(name, full, think, is_chat=True)
            if problem is not None:
                fail(400, problem)
                return
            clipped = prompt_tokens > n_ctx  # /v1 cannot set num_ctx; Ollama clips silently
            prompt_tokens = min(prompt_tokens, n_ctx)
            core.ctx[full] = n_ctx
            budget, starve = max_tokens, True
            reasoning_key = "reasoning" if v >= (0, 11, 0) else ""
            ident = f"chatcmpl-{random.randrange(1000)}"
            extra = {"system_fingerprint": "fp_ollama"}
        else:
            served = core.served()
            name = str(req.get("model") or (served[0] if served else ""))
            if flavor == "vllm" and name not in served:
                fail(404, f"The model `{name}` does not exist.", counter="not_found_404")
                return
            st["by_model"][name] = st["by_model"].get(name, 0) + 1  # llama-server serves what it loaded, any name
            kwargs = req.get("chat_template_kwargs") if isinstance(req.get("chat_template_kwargs"), dict) else {}
            can = core.can_think(name)
            thinking = can and (_is_harmony(name) or (kwargs.get("enable_thinking") is not False and effort != "none"))
            if flavor == "vllm":
                if prompt_tokens >= n_ctx:
                    fail(400, f"This model's maximum context length is {n_ctx} tokens. However, your request has "
                              f"{prompt_tokens} input tokens. Please reduce the length of the input messages.",
                         counter="too_long_400")
                    return
                if max_tokens is not None and prompt_tokens + max_tokens > n_ctx:
                    fail(400, f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This model's maximum "
                              f"context length is {n_ctx} tokens and your request has {prompt_tokens} input tokens "
                              f"({max_tokens} > {n_ctx} - {prompt_tokens}).", counter="too_long_400")
                    return
                budget = n_ctx - prompt_tokens if max_tokens is None else max_tokens
                ident = f"chatcmpl-{hashlib.md5(f'{t0}{note}'.encode()).hexdigest()}"
                extra = {"system_fingerprint": None, "prompt_logprobs": None}
            else:
                if prompt_tokens >= n_ctx:
                    st["too_long_400"] += 1
                    self._send(*_json(400, {"error": {
                        "code": 400, "message": "the request exceeds the available context size, try increasing it",
                        "type": "exceed_context_size_error", "n_prompt_tokens": prompt_tokens, "n_ctx": n_ctx}}), keep=keep)
                    return
                room = n_ctx - prompt_tokens  # no context shift: generation ends where the context does
                budget = min(max_tokens, room) if max_tokens else room
                ident = f"chatcmpl-{hashlib.md5(f'{t0}{note}'.encode()).hexdigest()[:32]}"
                extra = {"system_fingerprint": LLAMA_BUILD}
            starve = False  # structured output applies after the reasoning
            reasoning_key = "reasoning_content"

        def reply(content: str, thought: str, done_reason: str, eval_tokens: int) -> None:
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if flavor == "vllm":
                if thought and not content:
                    message["content"] = None  # the reasoning never ended
                message["reasoning_content"] = thought or None
                message["tool_calls"] = []
            elif thought and reasoning_key:
                message[reasoning_key] = thought
            choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": done_reason}
            if flavor == "vllm":
                choice.update({"logprobs": None, "stop_reason": None})
            usage: dict[str, Any] = {"prompt_tokens": prompt_tokens, "completion_tokens": eval_tokens,
                                     "total_tokens": prompt_tokens + eval_tokens}
            out = {"id": ident, "object": "chat.completion", "created": int(t0), "model": name, "choices": [choice],
                   "usage": usage, **extra}
            if flavor == "llama-server":
                ms = (time.time() - t0) * 1000
                out["timings"] = {"prompt_n": prompt_tokens, "prompt_ms": round(ms / 4, 3), "predicted_n": eval_tokens,
                                  "predicted_ms": round(ms * 3 / 4, 3)}
            self._send(*_json(200, out), keep=keep)

        await self._serve(name=name, fmt=fmt, note=note, num_predict=budget, think=thinking, starve=starve,
                          prompt_tokens=prompt_tokens, clipped=clipped,
                          err=functools.partial(_oai_err, flavor), reply=reply, keep=keep)

    # ---- generation: the machinery both APIs share ----
    async def _serve(self, *, name: str, fmt: Any, note: str, num_predict: Any, think: bool, starve: bool,
                     prompt_tokens: int, clipped: bool, err, reply, keep: bool) -> None:
        """Queue for a slot, hold it for the latency, draw the outcome, generate; ``reply(content, thinking,
        done_reason, eval_tokens)`` sends the answer in its API's shape, ``err(status, message)`` shapes errors.
        ``starve``: thinking with a format leaves the content empty (Ollama)."""
        core, st, cfg = self.core, self.core.st, self.core.cfg
        try:
            got = await core.acquire()
        except asyncio.CancelledError:
            st["cancelled"] += 1
            raise
        if not got:
            status = cfg["busy_status"]
            st[f"busy_{status}"] = st.get(f"busy_{status}", 0) + 1
            self._send(*err(status, BUSY_MESSAGE), keep=keep)
            return
        try:
            hold = cfg["latency"] + (core.rng.uniform(0.0, cfg["jitter"]) if cfg["jitter"] > 0 else 0.0)
            rng = core.rng
            error = cfg["error_rate"] > 0 and rng.random() < cfg["error_rate"]
            hang = not error and cfg["hang_rate"] > 0 and rng.random() < cfg["hang_rate"]
            drop = not (error or hang) and cfg["drop_rate"] > 0 and rng.random() < cfg["drop_rate"]
            cutoff = not (error or hang or drop) and cfg["cutoff_rate"] > 0 and rng.random() < cfg["cutoff_rate"]
            invalid = (
                not (error or hang or drop or cutoff) and cfg["invalid_rate"] > 0 and rng.random() < cfg["invalid_rate"]
            )
            await core.load(_normalize_model(name))
            if hang:
                st["hung"] += 1
                await self.gone  # hold the slot until the client goes away (connection_lost cancels us)
                return
            if hold > 0:
                await asyncio.sleep(hold)
            if error:
                st["errors_500"] += 1
                self._send(*err(500, ERROR_MESSAGE), keep=keep)
                return
            if drop:
                st["dropped"] += 1
                core.drop_seq += 1
                if self.transport is not None and not self.transport.is_closing():
                    if core.drop_seq % 2 == 0:  # every second drop: headers and half a body, then close
                        partial = b'{"model":"' + name.encode() + b'","created_at":"'
                        self.transport.write(
                            b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
                            b"Content-Length: 400\r\n\r\n" + partial
                        )
                    self.transport.close()
                self.closed = True
                return

            thought = _thought(note) if think else ""
            done_reason = "stop"
            if thought and starve and _has_format(fmt):  # every token went to the thinking
                content = ""
            else:
                if invalid:
                    seq = core.invalid_seq
                    core.invalid_seq += 1
                    if seq % 2 == 0:
                        content, _ = _answer(fmt, note)
                        content = _broken(content)
                    else:
                        content, _ = _answer(fmt, note, bad_enum=True)
                    st["invalid"] += 1
                else:
                    content, _ = _answer(fmt, note)
                if cutoff:
                    content = content[: max(1, int(len(content) * (0.3 + 0.5 * rng.random())))]
                    done_reason = "length"
            if isinstance(num_predict, (int, float)) and num_predict > 0:
                if thought and len(thought) >= 4 * num_predict:  # the thinking used up the tokens
                    thought, content, done_reason = thought[: int(4 * num_predict)], "", "length"
                elif len(thought) + len(content) > 4 * num_predict:
                    content = content[: int(4 * num_predict) - len(thought)]
                    done_reason = "length"
            if done_reason == "length":
                st["cutoff"] += 1
            if thought and not content:
                st["thinking_only"] += 1

            if clipped:
                st["truncated"] += 1
            eval_tokens = max(1, (len(content) + len(thought)) // 4)
            st["prompt_tokens"] += prompt_tokens
            st["eval_tokens"] += eval_tokens
            st["served"] += 1
            reply(content, thought, done_reason, eval_tokens)
        except asyncio.CancelledError:
            st["cancelled"] += 1
            raise
        finally:
            core.release()


# --------------------------------------------------------------------------------------------------------------
# in-process server
# --------------------------------------------------------------------------------------------------------------


class StandinOllama:
    """The stand-in, served by an asyncio loop in a daemon thread of this process."""

    def __init__(
        self,
        *,
        port: int = 0,
        latency: float = 0.0,
        jitter: float = 0.0,
        load_seconds: float = 0.0,
        slots: int = 4,
        queue: int = 512,
        invalid_rate: float = 0.0,
        cutoff_rate: float = 0.0,
        error_rate: float = 0.0,
        hang_rate: float = 0.0,
        drop_rate: float = 0.0,
        models: tuple[str, ...] = ("llama3",),
        version: str = "0.11.10",
        seed: int = 0,
        context_length: int = 2048,
        pull_seconds: float = 1.0,
        pull_fail_at: float = 0.0,
        registry: tuple[str, ...] = REGISTRY,
        loaded: tuple[str, ...] | None = None,
        expires_at: str = "",
        thinking_models: tuple[str, ...] = THINKING_MODELS,
        cloud_models: tuple[str, ...] = (),
        flavor: str = "ollama",
        busy_status: int = 503,
        api_key: str = "",
        models_dir: str = "",
        host: str = "127.0.0.1",
    ):
        self.host = host
        self.port = port
        self._config = _coerce_knobs(
            {
                "latency": latency,
                "jitter": jitter,
                "load_seconds": load_seconds,
                "slots": slots,
                "queue": queue,
                "invalid_rate": invalid_rate,
                "cutoff_rate": cutoff_rate,
                "error_rate": error_rate,
                "hang_rate": hang_rate,
                "drop_rate": drop_rate,
                "models": models,
                "version": version,
                "seed": seed,
                "context_length": context_length,
                "pull_seconds": pull_seconds,
                "pull_fail_at": pull_fail_at,
                "registry": registry,
                "expires_at": expires_at,
                "loaded": loaded,
                "thinking_models": thinking_models,
                "cloud_models": cloud_models,
                "flavor": flavor,
                "busy_status": busy_status,
                "api_key": api_key,
                "models_dir": models_dir,
            }
        )
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._core: _Core | None = None
        self._server: asyncio.base_events.Server | None = None

    # -- lifecycle --
    def start(self) -> StandinOllama:
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self._core = _Core(self._config)
                self._server = loop.run_until_complete(
                    loop.create_server(
                        lambda: _Conn(self._core), self.host, self.port, backlog=2048, reuse_address=True
                    )
                )
                self.port = self._server.sockets[0].getsockname()[1]
                self.url = f"http://{self.host}:{self.port}"
            except BaseException as e:  # noqa: BLE001 - reported to the starting thread
                failure.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                try:
                    loop.run_until_complete(self._shutdown())
                finally:
                    loop.close()

        self._thread = threading.Thread(target=run, name=f"standin-ollama:{self.port}", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            self._thread = None
            raise failure[0]
        return self

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._core.conns if self._core else ()):
            if conn.transport is not None:
                conn.transport.abort()
        await asyncio.sleep(0)
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._loop.stop)
        except RuntimeError:
            pass
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- control --
    def _call(self, fn, *args):
        if self._loop is None or self._thread is None:
            raise RuntimeError("the stand-in is not running; call start() first")

        async def inner():
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(inner(), self._loop).result(10)

    def configure(self, **knobs: Any) -> None:
        knobs = _coerce_knobs(knobs)
        self._config.update(knobs)
        if self._thread is not None:
            self._call(self._core.configure, knobs)

    def config(self) -> dict[str, Any]:
        return self._call(self._core.config) if self._thread is not None else dict(self._config)

    def stats(self) -> dict[str, Any]:
        return self._call(self._core.stats)

    def reset_stats(self) -> None:
        self._call(self._core.reset_stats)

    def __repr__(self) -> str:
        return f"StandinOllama(url={self.url!r}, config={self._config!r})"


# --------------------------------------------------------------------------------------------------------------
# subprocess server
# --------------------------------------------------------------------------------------------------------------


def _http(url: str, method: str = "GET", payload: Any = None, timeout: float = 10.0) -> Any:
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        raise ValueError(f"{method} {url}: HTTP {e.code}: {e.read().decode(errors='replace')}") from None


def _knob_args(knobs: dict[str, Any]) -> list[str]:
    args: list[str] = []
    for key, value in knobs.items():
        if key in ("port", "host"):
            args += [f"--{key}", str(value)]
            continue
        if key not in KNOBS:
            raise ValueError(f"unknown knob {key!r}; known: {', '.join(sorted(KNOBS))}")
        if key == "loaded" and value is None:
            continue
        if KNOBS[key] is tuple:
            value = ",".join(value) if not isinstance(value, str) else value
        args.append(f"--{key.replace('_', '-')}={value}")  # one word: values may be empty or start with "-"
    return args


class StandinProcess:
    """The same server in a child process (``python tests/standin/standin_ollama.py``): SIGKILL-able, CPU apart."""

    def __init__(self, proc: subprocess.Popen, url: str):
        self.proc = proc
        self.pid = proc.pid
        self.url = url

    def configure(self, **knobs: Any) -> None:
        _http(self.url + "/_control", "POST", _jsonable(knobs))

    def config(self) -> dict[str, Any]:
        return _http(self.url + "/_control")

    def stats(self) -> dict[str, Any]:
        return _http(self.url + "/_stats")

    def reset_stats(self) -> None:
        _http(self.url + "/_reset_stats", "POST", {})

    def cpu_seconds(self) -> float:
        """user+system CPU of the child so far (from /proc; works after SIGSTOP too, not after it is reaped)."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, then reap."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def terminate(self) -> None:
        """SIGTERM, then reap (the server exits promptly on SIGTERM)."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        self.terminate()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"StandinProcess(pid={self.pid}, url={self.url!r}, alive={self.alive()})"


def _jsonable(knobs: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in _coerce_knobs(knobs).items()}


def spawn_standin(*, startup_timeout: float = 20.0, **knobs: Any) -> StandinProcess:
    """Start the stand-in in a child process and wait until it listens.  Knobs as for ``StandinOllama``."""
    knobs.setdefault("port", 0)
    cmd = [sys.executable, os.path.abspath(__file__), *_knob_args(knobs)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, close_fds=True)
    from tests.standin.listening import wait_listening  # the parent is a test or a benchmark: `tests` imports

    return StandinProcess(proc, wait_listening(proc, cmd, startup_timeout, "stand-in"))


# --------------------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Stand-in Ollama server for tests and benchmarks.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--jitter", type=float, default=0.0)
    p.add_argument("--load-seconds", type=float, default=0.0, help="the model loads this long on the first answer")
    p.add_argument("--slots", type=int, default=4)
    p.add_argument("--queue", type=int, default=512)
    for rate in _RATES:
        p.add_argument(f"--{rate.replace('_', '-')}", type=float, default=0.0)
    p.add_argument("--models", default="llama3", help="comma-separated, e.g. llama3,qwen2.5:7b")
    p.add_argument("--version", default="0.11.10")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--context-length", type=int, default=2048, help="num_ctx when a request sets none")
    p.add_argument("--pull-seconds", type=float, default=1.0, help="how long a pull streams progress")
    p.add_argument("--pull-fail-at", type=float, default=0.0, help="end pulls with an error at this fraction")
    p.add_argument("--registry", default=",".join(REGISTRY), help="comma-separated models a pull can fetch")
    p.add_argument("--loaded", default=None, help="comma-separated models /api/ps lists (default: all)")
    p.add_argument("--expires-at", default="", help="fixed expires_at for /api/ps (default: now + 5 min)")
    p.add_argument("--thinking-models", default=",".join(THINKING_MODELS),
                   help="comma-separated name prefixes of models that can think")
    p.add_argument("--cloud-models", default="", help="comma-separated cloud models (Ollama >= 0.12), e.g. gpt-oss:120b-cloud")
    p.add_argument("--flavor", default="ollama", choices=FLAVORS, help="which server to be")
    p.add_argument("--busy-status", type=int, default=503, help="HTTP status when the queue is full (429: a rate limiter)")
    p.add_argument("--api-key", default="", help="require Authorization: Bearer <key> (default: no key)")
    p.add_argument("--models-dir", default="", help="keep pulled models as files here, as Ollama in OLLAMA_MODELS "
                   "(-: $OLLAMA_MODELS)")
    a = p.parse_args(argv)
    if a.models_dir == "-":
        a.models_dir = os.environ.get("OLLAMA_MODELS", "")
    knobs = {k: getattr(a, k) for k in KNOBS if k != "loaded"}
    if a.loaded is not None:
        knobs["loaded"] = a.loaded
    server = StandinOllama(port=a.port, host=a.host, **knobs)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    print(f"LISTENING {server.url}", flush=True)
    try:
        while not stop.wait(3600):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
