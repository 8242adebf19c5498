"""The Runs screen's view of the followed run, without a terminal: counts, ETA, label tallies, invalid reasons and
log lines from the feed's updates (app.runs.followed)."""

from __future__ import annotations

from app.engine.events import Counts
from app.runs.follow import FeedUpdate
from app.runs.followed import FollowedRun, log_line
from ledger.answers import answer_fields

SCHEMA = {"type": "object", "properties": {
    "response": {"enum": ["(1) Likely", "(2) Unlikely"]},
    "explanation": {"type": "string"}}}


class NoFeed:
    """Updates are handed to apply() directly; nothing is read."""


def followed(tmp_path) -> FollowedRun:
    run = FollowedRun(tmp_path, "01JTESTRUN0000000000000000", follower=NoFeed())
    run.fields = [f for f in answer_fields(SCHEMA) if f.categorical]
    return run


def unit(uid, outcome="valid", response="(1) Likely", error=None):
    u = {"id": uid, "outcome": outcome, "attempts": 1, "latency_ms": 812.4, "tokens_in": 300, "tokens_out": 20,
         "t": 1_700_000_000}
    if outcome == "valid":
        u["answer"] = {"response": response}
    if error:
        u["error"] = error
    return u


def test_progress_and_eta_follow_the_counts_and_the_recent_rate(tmp_path):
    run = followed(tmp_path)
    assert run.eta_s is None and run.fraction == 0.0  # nothing known yet
    run.apply(FeedUpdate(header={"total": 100}, counts=Counts(total=100, done=40, valid=40), recent_rate=2.0))
    assert run.shown_total == 100 and run.fraction == 0.4
    assert run.eta_s == 30.0  # 60 notes to go at 2 notes/s
    run.apply(FeedUpdate(counts=Counts(total=100, done=90, valid=90), recent_rate=5.0))
    assert run.eta_s == 2.0
    run.apply(FeedUpdate(counts=Counts(total=100, done=95, valid=95), ended={"status": "interrupted"}))
    assert run.eta_s is None  # an ended run needs no server any more, whatever it left undone


def test_the_sparkline_gets_a_point_only_when_the_recent_rate_moves(tmp_path):
    run = followed(tmp_path)
    moved = [run.apply(FeedUpdate(recent_rate=r))[1] for r in (1.0, 1.0, 2.5, None, 2.5)]
    assert moved == [True, False, True, False, False]
    assert list(run.rates) == [1.0, 2.5] and run.rate == 2.5


def test_labels_are_tallied_for_categorical_fields_and_each_note_is_one_log_line(tmp_path):
    run = followed(tmp_path)
    lines, _ = run.apply(FeedUpdate(units=[unit("a"), unit("b", response="(2) Unlikely"), unit("c"),
                                           unit("d", outcome="invalid", error="json")]))
    assert dict(run.labels["response"]) == {"(1) Likely": 2, "(2) Unlikely": 1}
    assert "explanation" not in run.labels  # free text is never tallied
    assert len(lines) == 4 and lines[0] == log_line(unit("a"))
    assert " valid " in lines[0] and "response=(1) Likely" in lines[0] and "812 ms" in lines[0]
    assert "invalid" in lines[3] and "(json)" in lines[3]
    assert run.reasons == {"json": 1} and run.seen == 4


def test_the_labels_say_when_they_cover_only_the_notes_seen_since_following_began(tmp_path):
    run = followed(tmp_path)
    run.apply(FeedUpdate(counts=Counts(total=500, done=300, valid=300), units=[unit("x"), unit("y")]))
    assert run.labels_scope() == " (the last 2 notes)"
    fresh = followed(tmp_path)
    fresh.apply(FeedUpdate(counts=Counts(total=5, done=2, valid=2), units=[unit("x"), unit("y")]))
    assert fresh.labels_scope() == ""


def test_why_invalid_speaks_once_most_answers_fail_or_the_run_ended_with_some(tmp_path):
    run = followed(tmp_path)
    run.apply(FeedUpdate(counts=Counts(total=10, done=4, valid=2, invalid=2),
                         units=[unit("a", "invalid", error="json"), unit("b", "invalid", error="json")]))
    assert run.why_invalid() == ""  # half invalid while running: not yet a cause worth a line
    run.apply(FeedUpdate(counts=Counts(total=10, done=5, valid=2, invalid=3),
                         units=[unit("c", "invalid", error="json")]))
    assert run.why_invalid().startswith("3 invalid: ")
    ended = followed(tmp_path)
    ended.apply(FeedUpdate(counts=Counts(total=10, done=10, valid=9, invalid=1),
                           ended={"status": "completed", "reasons": {"thinking": 1}}))
    assert ended.why_invalid().startswith("1 invalid: ") and "think" in ended.why_invalid()
