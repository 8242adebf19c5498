"""`ledger verify` on a ledger built by real engine runs: each kind of tampering is named (run, record), and a head
kept elsewhere catches a chain rewritten as a whole."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.helpers.auditkit import build, spawn_cli

# one worker builds the module's ledger once; spread over workers, each would build it again
pytestmark = pytest.mark.xdist_group("test_ledger_verify")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return build(tmp_path_factory.mktemp("verify"))


@pytest.fixture
def copy(pristine, tmp_path):
    """A copy of the built ledger to tamper with, and the runs in the order they were sealed."""
    ledger = tmp_path / "ledger"
    shutil.copytree(pristine.ledger, ledger)
    seals = [json.loads(line) for line in (ledger / "chain.jsonl").read_text().splitlines()]
    return ledger, [s["id"] for s in seals if s["kind"] == "run"]


def verify(ledger, *args):
    res = spawn_cli("ledger", "verify", "--json", *args, "--ledger", str(ledger))
    return res.returncode, json.loads(res.stdout) if res.stdout else None, res.stderr


def journal(ledger, run_id):
    return ledger / "journal" / f"{run_id}.jsonl"


def lines(path):
    return path.read_bytes().split(b"\n")[:-1]


def write(path, records):
    path.write_bytes(b"".join(r + b"\n" for r in records))


def test_an_untouched_ledger_verifies(copy):
    ledger, runs = copy
    code, result, _ = verify(ledger)
    assert code == 0 and result["ok"] and result["sealed_runs"] == len(runs) == 4 and result["unsealed"] == []
    res = spawn_cli("ledger", "verify", "--ledger", str(ledger))
    assert res.returncode == 0 and res.stdout.startswith(f"ledger {ledger}: OK")


def test_an_edited_count_in_the_close_record(copy):
    ledger, runs = copy
    path = journal(ledger, runs[1])
    recs = lines(path)
    close = json.loads(recs[-1])
    assert close["type"] == "close"
    recs[-1] = recs[-1].replace(f'"valid":{close["counts"]["valid"]}'.encode(), f'"valid":{close["counts"]["valid"] + 1}'.encode())
    write(path, recs)
    code, result, _ = verify(ledger)
    assert code == 1
    [problem] = result["problems"]
    assert problem["what"] == f"run {runs[1]}" and problem["seq"] == len(recs) - 1
    assert "(close) was changed after it was sealed" in problem["message"]


def test_an_edited_answer_in_the_middle(copy):
    ledger, runs = copy
    path = journal(ledger, runs[2])
    recs = lines(path)
    assert json.loads(recs[1])["type"] == "batch" and len(recs) > 3
    recs[1] = recs[1].replace(b'"(1) Likely"', b'"(2) Unlikely"', 1) if b'"(1) Likely"' in recs[1] \
        else recs[1].replace(b'"(2) Unlikely"', b'"(1) Likely"', 1)
    write(path, recs)
    code, result, _ = verify(ledger)
    assert code == 1
    assert result["problems"][0]["what"] == f"run {runs[2]}" and result["problems"][0]["seq"] == 1
    assert "record seq 1 (batch) was changed" in result["problems"][0]["message"]


@pytest.mark.parametrize("where", ["middle", "end"])
def test_a_deleted_record(copy, where):
    ledger, runs = copy
    path = journal(ledger, runs[0])
    recs = lines(path)
    gone = 1 if where == "middle" else len(recs) - 1
    write(path, recs[:gone] + recs[gone + 1:])
    code, result, _ = verify(ledger)
    assert code == 1
    problem = result["problems"][0]
    assert problem["what"] == f"run {runs[0]}" and problem["seq"] == gone
    assert f"record seq {gone} was deleted" in problem["message"]


def test_two_journals_swapped(copy):
    ledger, runs = copy
    a, b = journal(ledger, runs[1]), journal(ledger, runs[2])
    tmp = a.with_suffix(".tmp")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    code, result, _ = verify(ledger)
    assert code == 1
    first = result["problems"][0]
    assert first["what"] == f"run {runs[1]}" and first["seq"] == 0 and "journals were swapped or renamed" in first["message"]
    assert {p["what"] for p in result["problems"]} == {f"run {runs[1]}", f"run {runs[2]}"}


def test_two_runs_swapped_in_the_chain(copy):
    ledger, _ = copy
    chain = ledger / "chain.jsonl"
    seals = lines(chain)
    seals[1], seals[2] = seals[2], seals[1]
    write(chain, seals)
    code, result, _ = verify(ledger)
    assert code == 1
    problem = result["problems"][0]
    assert problem["what"] == "chain" and problem["seq"] == 1 and "out of order" in problem["message"]


def test_a_deleted_journal(copy):
    ledger, runs = copy
    journal(ledger, runs[3]).unlink()
    code, result, _ = verify(ledger)
    assert code == 1 and result["problems"][0]["what"] == f"run {runs[3]}"
    assert "the journal is gone" in result["problems"][0]["message"]


def test_a_deleted_chain_is_noticed_by_the_index(copy):
    ledger, runs = copy
    (ledger / "chain.jsonl").unlink()
    code, result, _ = verify(ledger)
    assert code == 1 and result["problems"][0]["what"] == "chain"
    assert "the index recorded 4 seals, chain.jsonl holds 0" in result["problems"][0]["message"]
    assert len(result["unsealed"]) == len(runs)


def test_head_kept_elsewhere(copy, pristine):
    ledger, _ = copy
    _, result, _ = verify(ledger)
    head = result["head"]
    code, ok, _ = verify(ledger, "--head", head)
    assert code == 0 and ok["head_check"]["found"] and ok["head_check"]["since"] == 0
    code, bad, _ = verify(ledger, "--head", "ab" * 32)
    assert code == 1 and not bad["head_check"]["found"] and "is not in this ledger's chain" in bad["problems"][0]["message"]
    # someone rewrites the whole chain (removes it and rebuilds): every file checks out, only the old head does not
    (ledger / "chain.jsonl").unlink()
    res = spawn_cli("ledger", "rebuild", "--ledger", str(ledger))
    assert res.returncode == 0, res.stderr
    code, fresh, _ = verify(ledger)
    assert code == 0 and fresh["head"] != head
    code, old, _ = verify(ledger, "--head", head)
    assert code == 1 and old["problems"][0]["what"] == "chain"
    res = spawn_cli("ledger", "verify", "--head", "not-a-hash", "--ledger", str(ledger))
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "is not a head hash" in res.stderr
