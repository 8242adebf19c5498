"""notes-tui against each kind of server, side by side with what a researcher would write by hand on the same
server and notes, in one run (so both meet the same machine):

    python -m bench.servers real      # the real llama.cpp server (xllamacpp, SmolLM2-135M, 2 slots), the 51 demo notes:
                                      # notes-tui --run (whole process, results in SQLite, ledger) vs the official
                                      # `openai` client in a thread pool (writes nothing)
    python -m bench.servers vllm      # a stand-in shaped like vLLM (64 slots, 200 ms a note, capacity 320 notes/s),
                                      # 3,000 notes from MariaDB with [run] concurrency = 72: the share of capacity
    python -m bench.servers ollama    # a 200-note Ollama run end to end (whole process, MariaDB in and out) vs the
                                      # official `ollama` client in a thread pool that also writes its results
    python -m bench.servers all

The embedded model against the plain llama-cpp-python loop is bench/embedded.py. Figures go to the README; no test
asserts them.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pymysql

from bench.throughput import DB, MYSQL, prepare_db, run_engine
from tests.helpers.support import PNEUMONIA_ANSWER
from tests.standin.standin_ollama import spawn_standin

ROOT = Path(__file__).resolve().parents[1]

SYSTEM = "You are a medical analysis assistant. Answer with JSON only."
USER = "Does this note suggest pneumonia is a diagnosis? Note: {note}"


def demo_notes() -> list[tuple[int, str]]:
    with open(ROOT / "experiments" / "data" / "demo_notes.csv", newline="", encoding="utf-8") as f:
        return [(int(r["note_id"]), r["note_text"]) for r in csv.DictReader(f)]


def answer_schema() -> dict:
    import tomllib

    from app.engine.answer import AnswerSpec
    from app.experiment.schema import AnswerSection

    doc = tomllib.loads(PNEUMONIA_ANSWER)
    return AnswerSpec(AnswerSection.model_validate(doc["answer"])).schema


def run_cli(*args: str, env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "app", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=3600)
    return time.perf_counter() - t0, done


# -- the real llama.cpp server -----------------------------------------------------------------------------------

OPENAI_PEER = textwrap.dedent('''
    import json, sys, time
    from concurrent.futures import ThreadPoolExecutor
    t0 = time.perf_counter()
    from openai import OpenAI
    url, model, workers, schema, notes, system, user, max_tokens = json.loads(sys.stdin.read())
    client = OpenAI(base_url=url + "/v1", api_key="none", timeout=300)
    def one(note):
        r = client.chat.completions.create(model=model, temperature=0.0, seed=7, max_tokens=max_tokens,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": user.replace("{note}", note)}],
            response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}})
        return r.choices[0].message.content
    with ThreadPoolExecutor(workers) as pool:
        answers = list(pool.map(one, [n for _, n in notes]))
    valid = sum(1 for a in answers if a and a.strip().startswith("{"))
    print(json.dumps({"seconds": time.perf_counter() - t0, "answers": len(answers), "json": valid}))
''')


def bench_real(args: argparse.Namespace) -> None:
    from tests.standin.llama_server import have_xllamacpp, spawn_llama_server

    if not have_xllamacpp():
        sys.exit("xllamacpp is not installed: pip install -e '.[test]'")
    notes = demo_notes()[: args.real_notes]
    schema = answer_schema()
    with spawn_llama_server(parallel=args.slots_real, ctx=2048, alias="smollm2") as server, \
            tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for rnd in range(args.rounds):
            import sqlite3

            db = folder / f"notes{rnd}.db"
            conn = sqlite3.connect(db)
            conn.execute("CREATE TABLE notes (note_id INTEGER PRIMARY KEY, note_text TEXT)")
            conn.executemany("INSERT INTO notes VALUES (?, ?)", notes)
            conn.commit()
            conn.close()
            exp = folder / f"real{rnd}.toml"
            exp.write_text(f"""
name = "bench-real-{rnd}"
[model]
backend = "openai-compatible"
name = "smollm2"
hosts = ["{server.url}"]
[model.options]
temperature = 0.0
seed = 7
num_ctx = 2048
num_predict = 160
[prompt]
system = "{SYSTEM}"
user = "{USER}"
{PNEUMONIA_ANSWER}
[source]
kind = "sqlite"
path = "{db.name}"
table = "notes"
id_columns = ["note_id"]
text_column = "note_text"
[results]
table = "results"
batch_size = 10
""")
            tool_s, done = run_cli("--run", str(exp), "--ledger", str(folder / "ledger"))
            if done.returncode not in (0, 1):
                sys.exit(f"notes-tui failed: {done.stderr}")
            summary = next((ln.strip() for ln in done.stdout.splitlines() if ln.strip().startswith("valid ")), "")
            payload = json.dumps([server.url, "smollm2", args.slots_real + 1, schema, notes, SYSTEM, USER, 160])
            t0 = time.perf_counter()
            peer = subprocess.run([sys.executable, "-c", OPENAI_PEER], input=payload, capture_output=True, text=True,
                                  timeout=3600)
            peer_s = time.perf_counter() - t0
            if peer.returncode != 0:
                sys.exit(f"the openai peer failed: {peer.stderr[-500:]}")
            n = len(notes)
            print(f"round {rnd + 1}: real llama.cpp server ({args.slots_real} slots, SmolLM2-135M), {n} demo notes")
            print(f"  notes-tui --run (whole process, SQLite results + ledger): {tool_s:.2f} s = {n / tool_s:.2f} "
                  f"notes/s   [{summary}]")
            print(f"  openai client, thread pool of {args.slots_real + 1} (whole process, writes nothing): "
                  f"{peer_s:.2f} s = {n / peer_s:.2f} notes/s")
            print(f"  notes-tui / peer: {peer_s / tool_s:.3f}x", flush=True)


# -- a vLLM-shaped stand-in ----------------------------------------------------------------------------------------

def write_mysql_experiment(folder: Path, hosts: list[str], backend: str, concurrency: int | None, batch: int = 100,
                           model: str = "llama3") -> Path:
    env = folder / ".env"
    env.write_text(f"DB_USER=root\nDB_PASS=\nDB_HOST=127.0.0.1\nDB_NAME={DB}\n")
    env.chmod(0o600)
    exp = folder / "bench.toml"
    exp.write_text(f"""
name = "bench-{backend}"
[model]
backend = "{backend}"
name = "{model}"
hosts = {json.dumps(hosts)}
timeout_s = 60
[model.options]
temperature = 0.0
seed = 7
num_ctx = 4096
[prompt]
system = "{SYSTEM}"
user = "{USER}"
{PNEUMONIA_ANSWER}
[source]
kind = "mysql"
env_file = ".env"
table = "notes"
id_columns = ["patientvisitid", "accession"]
text_column = "note_text"
[results]
table = "results"
batch_size = {batch}
[run]
{f"concurrency = {concurrency}" if concurrency else ""}
""")
    return exp


def bench_vllm(args: argparse.Namespace) -> None:
    n, slots, latency = args.vllm_notes, 64, 0.2
    prepare_db(n)
    server = spawn_standin(latency=latency, slots=slots, flavor="vllm", context_length=8192)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            exp = write_mysql_experiment(Path(tmp), [server.url], "openai-compatible", args.concurrency)
            wall, cpu, done, counts = run_engine(exp, Path(tmp) / "ledger")
        stats = server.stats()
    finally:
        server.stop()
    capacity = slots / latency
    rate = done / wall
    print(f"vLLM-shaped stand-in ({slots} slots, {latency * 1000:.0f} ms a note, capacity {capacity:.0f} notes/s), "
          f"concurrency = {args.concurrency}: {done} notes in {wall:.1f} s = {rate:.1f} notes/s, "
          f"{rate / capacity:.3f} of capacity (ramp-up included); engine CPU {1000 * cpu / max(done, 1):.3f} ms/note; "
          f"valid {counts['valid']}; server-side peak {stats['max_active']} answering, {stats['max_queued']} queued")


# -- a 200-note Ollama run against the thread-pool peer that writes its results ----------------------------------

OLLAMA_PEER = textwrap.dedent('''
    import json, sys, time
    from concurrent.futures import ThreadPoolExecutor
    t0 = time.perf_counter()
    import ollama, pymysql
    url, workers, schema, system, user, db, mysql = json.loads(sys.stdin.read())
    conn = pymysql.connect(database=db, **mysql)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS peer_results (patientvisitid INT, accession VARCHAR(255), "
                    "response VARCHAR(255), explanation TEXT, PRIMARY KEY (patientvisitid, accession))")
        cur.execute("SELECT patientvisitid, accession, note_text FROM notes")
        notes = cur.fetchall()
    client = ollama.Client(host=url, timeout=300)
    def one(row):
        pid, acc, text = row
        r = client.chat(model="llama3", format=schema, options={"temperature": 0.0, "seed": 7, "num_ctx": 4096},
                        messages=[{"role": "system", "content": system},
                                  {"role": "user", "content": user.replace("{note}", text.decode())}])
        a = json.loads(r.message.content)
        return (pid, acc, a["response"], a["explanation"])
    with ThreadPoolExecutor(workers) as pool:
        rows = list(pool.map(one, notes))
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO peer_results VALUES (%s, %s, %s, %s)", rows)
    conn.commit()
    conn.close()
    print(json.dumps({"seconds": time.perf_counter() - t0, "rows": len(rows)}))
''')


def bench_ollama(args: argparse.Namespace) -> None:
    n, slots, latency = args.ollama_notes, 4, 0.2
    server = spawn_standin(latency=latency, slots=slots, version="0.13.1")
    schema = answer_schema()
    try:
        for rnd in range(args.rounds):
            prepare_db(n)
            with tempfile.TemporaryDirectory() as tmp:
                exp = write_mysql_experiment(Path(tmp), [server.url], "ollama", None)
                tool_s, done = run_cli("--run", str(exp), "--ledger", str(Path(tmp) / "ledger"))
            if done.returncode != 0:
                sys.exit(f"notes-tui failed: {done.stderr}")
            payload = json.dumps([server.url, 8, schema, SYSTEM, USER, DB, MYSQL])
            t0 = time.perf_counter()
            peer = subprocess.run([sys.executable, "-c", OLLAMA_PEER], input=payload, capture_output=True,
                                  text=True, timeout=3600)
            peer_s = time.perf_counter() - t0
            if peer.returncode != 0:
                sys.exit(f"the ollama peer failed: {peer.stderr[-800:]}")
            conn = pymysql.connect(database=DB, **MYSQL)
            with conn.cursor() as cur:
                cur.execute("SELECT COUNT(*), SUM(valid) FROM results")
                rows, valid = cur.fetchone()
                cur.execute("SELECT COUNT(*) FROM peer_results")
                peer_rows = cur.fetchone()[0]
            conn.close()
            capacity = slots / latency
            print(f"round {rnd + 1}: Ollama-shaped stand-in 0.13.1 ({slots} slots, {latency * 1000:.0f} ms, capacity "
                  f"{capacity:.0f} notes/s), {n} notes from MariaDB, results back to MariaDB")
            print(f"  notes-tui --run (whole process): {tool_s:.2f} s = {n / tool_s:.2f} notes/s, {rows} rows "
                  f"({valid} valid)")
            print(f"  ollama client, thread pool of 8, one INSERT batch at the end (whole process): {peer_s:.2f} s = "
                  f"{n / peer_s:.2f} notes/s, {peer_rows} rows")
            print(f"  notes-tui / peer: {peer_s / tool_s:.3f}x", flush=True)
    finally:
        server.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=("real", "vllm", "ollama", "all"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--real-notes", type=int, default=51)
    p.add_argument("--slots-real", type=int, default=2)
    p.add_argument("--vllm-notes", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=72)
    p.add_argument("--ollama-notes", type=int, default=200)
    args = p.parse_args()
    if args.part in ("real", "all"):
        bench_real(args)
    if args.part in ("vllm", "all"):
        bench_vllm(args)
    if args.part in ("ollama", "all"):
        bench_ollama(args)


if __name__ == "__main__":
    main()
