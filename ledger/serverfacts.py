"""What a run's servers said of themselves and what the run sent them, as rows for `ledger show` and every report:
kind and version, the context the model was loaded with, `think`, `truncate`, and whether notes left the cluster."""

from __future__ import annotations

import json
from typing import Any


def _think_text(server: dict[str, Any]) -> str | None:
    if "think" not in server:
        return None
    wanted = json.dumps(server.get("think"))
    sent = server.get("think_sent")
    if server.get("kind") in ("ollama",) and "capabilities" in server:
        if sent is None:
            return f"{wanted} (not sent: the model does not think)"
        return f"{wanted} (sent)"
    return f"{wanted} (sent as {json.dumps(sent)})" if sent is not None else wanted


def _truncate_text(server: dict[str, Any]) -> str | None:
    if server.get("kind") != "ollama" or "truncate_sent" not in server:
        return None
    sent = server.get("truncate_sent")
    if sent is False:
        return "false (sent: a note longer than the context is refused and counted truncated)"
    if sent is None:
        return "not sent (a server before 0.12.6: an over-long note is cut and flagged truncated)"
    return f"false, {sent}"


def remote_text(header: dict[str, Any]) -> str:
    server = header.get("server") if isinstance(header.get("server"), dict) else {}
    allowed = header.get("allow_remote") or server.get("allow_remote")
    remote = server.get("remote")
    if allowed:
        where = f" to {remote}" if remote else ""
        return f"ALLOWED (allow_remote = true): notes may have been sent outside the cluster{where}"
    if header.get("backend") == "llamacpp":
        return "none: the model ran in-process"
    return "none: the model and every host are inside the cluster"


def server_rows(header: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, text) rows; runs made before the servers were asked about themselves give the rows they can."""
    server = header.get("server") if isinstance(header.get("server"), dict) else {}
    at_end = (header.get("at_end") or {}).get("server") if isinstance(header.get("at_end"), dict) else None
    rows: list[tuple[str, str]] = []
    if server:
        kind = server.get("kind") or header.get("backend")
        rows.append(("server", " ".join(str(x) for x in (kind, server.get("version")) if x)))
        loaded = (at_end or {}).get("context_length") if isinstance(at_end, dict) else None
        if isinstance(loaded, dict) and loaded:
            values = sorted(set(loaded.values()))
            rows.append(("context", f"{', '.join(str(v) for v in values)} tokens (as the server loaded the model)"))
        elif server.get("context_length"):
            how = "loaded so before the run; each note asks for num_ctx" if server.get("kind") == "ollama" and \
                "capabilities" in server else "the server's own: num_ctx cannot be sent to it"
            rows.append(("context", f"{server['context_length']} tokens ({how})"))
        if server.get("model_identity"):
            rows.append(("model file", str(server["model_identity"])))
        for label, text in (("think", _think_text(server)), ("truncate", _truncate_text(server))):
            if text:
                rows.append((label, text))
        if server.get("digest") and not header.get("model_digest"):
            rows.append(("digest", str(server["digest"])))
    at_end = header.get("at_end") if isinstance(header.get("at_end"), dict) else {}
    limits = at_end.get("in_flight")
    if isinstance(limits, dict) and limits:
        rows.append(("in flight", ", ".join(f"{_host(url)} {v.get('min')}/{v.get('median')}/{v.get('max')}"
                                            for url, v in limits.items() if isinstance(v, dict))
                     + " (min/median/max of the limit the run found per host)"))
    load = at_end.get("model_load")
    if isinstance(load, dict):
        rows.append(("model load", model_load_text(load)))
    rows.append(("remote", remote_text(header)))
    return rows


def model_load_text(load: dict[str, Any]) -> str:
    """What loading the model before the first note cost, e.g. `23.4 s on gpu-a:11434 before the first note`."""
    hosts = ", ".join(_host(h) for h in load.get("hosts") or []) or "?"
    took = f"{load.get('seconds', '?')} s on {hosts}"
    outcome = str(load.get("outcome") or "loaded")
    if outcome == "loaded":
        return f"{took} before the first note (it was not in memory)"
    if outcome == "stopped":
        return f"{took}, stopped while it loaded"
    return f"{took}, then {outcome}; the notes were sent anyway"


def _host(url: str) -> str:
    return str(url).split("://", 1)[-1].split("@")[-1]
