"""The round trip a screen shows: jitter does not move it, a real change does."""

from app.cluster.health import Health
from app.cluster.present import SteadyRtt

URL = "http://gpu-0:11434"


def checks(rtt: SteadyRtt, *ms: float | None, start: int = 0) -> list[str]:
    return [rtt.text(URL, Health("up" if m is not None else "down", rtt_ms=m, checked_at=float(start + i)))
            for i, m in enumerate(ms)]


def test_milliseconds_of_jitter_leave_the_shown_round_trip_alone():
    assert checks(SteadyRtt(), 3, 7, 4, 12, 5, 3, 9, 6) == ["3 ms"] * 8


def test_a_server_that_slows_down_shows_it_within_a_few_checks():
    shown = checks(SteadyRtt(), 4, 5, 4, 200, 210, 190, 205)
    # one or two slow answers are not yet the median; the third is, and small moves after it are not news
    assert shown == ["4 ms"] * 5 + ["190 ms"] * 2


def test_drawing_the_same_check_twice_counts_it_once():
    rtt = SteadyRtt()
    checks(rtt, 4, 4)
    slow = Health("up", rtt_ms=300, checked_at=10.0)
    assert [rtt.text(URL, slow) for _ in range(5)] == ["4 ms"] * 5  # one sample of 300 among 4, 4


def test_a_server_back_from_down_starts_afresh():
    rtt = SteadyRtt()
    assert checks(rtt, 4, 4, 4, None, 90) == ["4 ms", "4 ms", "4 ms", "-", "90 ms"]
