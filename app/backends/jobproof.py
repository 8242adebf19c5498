"""Is the server at a server job's address still that job? A saved URL, `$OLLAMA_HOST` or `hosts` in a file can
outlive its job, and once the job is gone anyone on the node may take the port. Before the first note (and before
the job's token is sent anywhere), the job's proxy is asked to answer a fresh nonce with an HMAC under the job's
token; a server that cannot, gets no note. An address whose job has ended is refused outright."""

from __future__ import annotations

import asyncio
import hmac
import secrets
from collections.abc import Iterable
from typing import Any

from app.backends.lean_http import HTTPFailure
from app.backends.ollama_wire import json_doc, open_wire
from app.cluster.proxy import PROOF_PATH, proof_of
from app.cluster.tokens import ended_job_for_url, record_for_url
from app.errors import BackendError

PROOF_TIMEOUT_S = 10.0


async def prove_jobs(exp: Any, hosts: Iterable[str]) -> None:
    await asyncio.gather(*(_prove(exp, h) for h in hosts))


async def _prove(exp: Any, host: str) -> None:
    record = await asyncio.to_thread(record_for_url, host)
    if record is None:
        ended = await asyncio.to_thread(ended_job_for_url, host)
        if ended is not None:
            raise BackendError(f"{exp.path}: model.hosts: {host} was server job {ended.get('job_id')}, which has "
                               "ended: whatever answers there now is not your server, and gets no note — start a job "
                               '(notes-tui server start) and use hosts = "auto"')
        return
    nonce = secrets.token_hex(16)
    wire = open_wire(host, PROOF_TIMEOUT_S)  # no token on this request: it goes to whoever holds the port
    try:
        resp = await asyncio.wait_for(wire.call("GET", f"{PROOF_PATH.decode()}?nonce={nonce}"), PROOF_TIMEOUT_S)
    except (HTTPFailure, TimeoutError):
        return  # nothing answers: the server check that follows says so
    finally:
        await wire.aclose()
    expected = proof_of(str(record["token"]).encode("ascii"), nonce.encode("ascii"))
    said = json_doc(resp).get("proof") if resp.status == 200 else None
    if not isinstance(said, str) or not hmac.compare_digest(said, expected):
        raise BackendError(f"{exp.path}: model.hosts: {host} is not your server job {record.get('job_id')}: it cannot "
                           "prove it holds the job's token (the job may have ended and someone else taken its port) "
                           "— no note is sent to it; check squeue --me, and use hosts = \"auto\"")
