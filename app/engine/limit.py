"""How many requests one server gets at once: a limit that grows while answers come back as fast as before, and
shrinks when they slow down because requests wait in the server's queue — so a 64-slot vLLM is kept full and a
one-slot Ollama is not handed five to queue, without anyone knowing either number.

In the spirit of TCP Vegas and Netflix's concurrency-limits (Vegas and Gradient limiters), with what a model server
adds: answers take hundreds of milliseconds and vary with the note, so decisions are made per *round* (a limit's
worth of answers, at least 8), on the round's mean latency against the *floor*, the mean latency when nothing
waits. With `limit` in flight and a mean `ratio` times the floor, about `limit × (1 − 1/ratio)` of them waited
(Little's law) — Vegas's estimate of the queue.

- **Start**: from `initial` (3 for an Ollama server, which answers one request at a time unless told otherwise: at
  most two wait; the slots a server says it has; 64 for vLLM, 16 for another continuous-batching server), doubling
  a round below 16 in flight, then ×4, as long as the round was at the limit and answers stayed at the floor. The
  first floor is the mean of the first quarter of the first round's requests in the order sent.
- **Grow**: by 1 a round below 8, then by √limit, while no more than a little room's worth waits (`headroom`: 10 %
  of the limit, at least two requests, so no slot idles while an answer travels back: DESIGN's "a little more in
  flight than the server has slots").
- **Cut**: when more than 20 % of the limit (and at least three requests) waited — at once when it is clear (answers 1.5 ×
  the floor, or a limit under 8), after two rounds in a row otherwise, so a run of long notes is not mistaken for a
  queue — to the requests that did not wait. The round after a cut is skipped (it waited behind what was queued
  before it); the next one judges the cut. Answers back at the floor: it was a queue, and the headroom is added
  back. Answers faster but still slow: more waited than estimated, cut again. Answers no faster: the server itself
  got slower (another user's run arrived): the floor is now what it answers in, and the limit goes back to where it
  was before the cuts began.
- **Busy** (503, 429): the limit drops below what was in flight when the server said so.
- **Restart**: a round at half the floor means the floor was no floor (the first answers waited for the model to
  load): four answers one at a time give it again, then the start from `initial`. Left alone, every round looked
  fast beside the load and the limit climbed to the cap.
- The floor follows a server that gets faster at once, and a slower one only through a cut that did not help, so a
  queue that builds slowly is never taken for the floor.
- A sample of a request sent before the last decision says nothing of the new limit, and is left out (`epoch`).
"""

from __future__ import annotations

import statistics

MAX_IN_FLIGHT = 256  # per host, when the experiment sets no [run] concurrency
TOLERANCE = 0.2  # answers up to 20 % above the floor count as not waiting
CUT_SHARE = 0.2  # cut when more than this share of the limit waited …
CUT_MIN = 2.5  # … and at least three requests: two waiting is the room a small server should have
CLEAR_RATIO = 1.5  # answers this much slower than the floor: a queue for sure, cut without a second round
START_GAIN = 4.0  # a round's growth in the start, once 16 are in flight (doubling before)
START_DOUBLING_BELOW = 16
MIN_ROUND = 8
MAX_ROUND = 64
CUT_HELPED = 0.6  # a cut that took less than 40 % off the excess latency did not help: the server slowed
RESTART_BELOW = 0.5  # a round this much faster than the floor: the floor was a model loading, start again
PROBE_ROUND = 4  # answers one at a time that give the floor again after a restart


class AdaptiveLimit:
    def __init__(self, initial: int = 1, cap: int = MAX_IN_FLIGHT):
        self.cap = max(1, cap)
        self.initial = float(max(1, min(initial, self.cap)))
        self.limit = self.initial
        self.floor: float | None = None  # the mean latency when nothing waits
        self.starting = True
        self.epoch = 0  # bumped at each decision: a request sent before it was sent under another limit
        self._samples: list[tuple[float, int]] = []
        self._cut: tuple[float, float] | None = None  # the ratio that made the last cut, and the limit before it
        self._before_cuts: float | None = None  # the limit before a run of cuts began (restored if they did not help)
        self._draining = False
        self._suspect = False
        self._probing = False  # measuring the floor one request at a time, after a restart

    @property
    def in_flight(self) -> int:
        """The whole requests allowed now."""
        return int(self.limit)

    def _round(self) -> int:
        if self._probing:
            return PROBE_ROUND
        if self.starting:
            return max(1, self.in_flight)
        return max(MIN_ROUND, min(MAX_ROUND, self.in_flight))

    def sample(self, latency_s: float, n_at_send: int, epoch: int) -> bool:
        """One answer: how long it took and how many were in flight (itself included) when it was sent. True when
        the limit was decided again."""
        if epoch != self.epoch:
            return False
        self._samples.append((latency_s, n_at_send))
        if len(self._samples) < self._round():
            return False
        at_limit = max(n for _, n in self._samples) >= self.in_flight
        mean = statistics.fmean(lat for lat, _ in self._samples)
        if self._probing:  # one at a time: every answer is the server's pace
            self._samples = []
            self.epoch += 1
            self._probing = False
            self.floor = mean
            self.limit = self.initial
            return True
        if self.floor is None:
            # the first floor from the first quarter sent: those cannot have waited behind our own requests (the
            # first of three on a one-slot server answers at its pace, the other two behind it)
            first = sorted(self._samples, key=lambda s: s[1])[:max(1, len(self._samples) // 4)]
            self.floor = statistics.fmean(lat for lat, _ in first)
        self._samples = []
        self.epoch += 1
        if self._draining:
            self._draining = False
            return True
        self._decide(mean, at_limit)
        return True

    def _decide(self, mean: float, at_limit: bool) -> None:
        assert self.floor is not None
        if mean < RESTART_BELOW * self.floor:
            self._restart()
            return
        if mean < self.floor:  # a faster round: the floor comes down (gently: one fast round can be luck)
            self.floor = 0.8 * self.floor + 0.2 * mean
        ratio = mean / self.floor
        headroom = max(2.0, 0.1 * self.limit)
        if self._cut is not None:
            cut_ratio, before = self._cut
            self._cut = None
            if ratio <= 1 + TOLERANCE:  # it was a queue: what is left is the server's pace, plus a little room
                self._before_cuts = None
                self.limit = min(self.cap, self.limit + headroom)
                return
            if ratio - 1 > CUT_HELPED * (cut_ratio - 1):
                # fewer in flight, answers no faster: the server got slower, not fuller. The limit goes back to
                # where it was before the cuts began, judged from now on against the server's new pace
                self._before_cuts = None
                self.floor = mean
                self.limit = before
                return
            # faster but still waiting: the estimate of what waited was short, judged again below
        waited = self.limit * (1 - 1 / ratio)
        over = waited > max(CUT_MIN, CUT_SHARE * self.limit)
        if over and (self._suspect or ratio > CLEAR_RATIO or self.limit < MIN_ROUND):
            self._suspect = False
            self.starting = False
            before = self.limit if self._before_cuts is None else self._before_cuts
            self.limit = max(1.0, self.limit - waited)
            if self.in_flight < int(before):
                self._before_cuts = before
                self._cut = (ratio, before)
                self._draining = True
            return
        self._suspect = over
        if over or ratio > 1 + TOLERANCE or not at_limit:
            return
        if self.starting:
            self.limit = min(self.cap, self.limit * (2.0 if self.limit < START_DOUBLING_BELOW else START_GAIN))
        else:
            self.limit = min(self.cap, self.limit + (1.0 if self.limit < MIN_ROUND else self.limit ** 0.5))

    def _restart(self) -> None:
        """The floor was no floor: the first answers waited for the model to load (or for another user's run that
        has since ended), and every round since looked fast beside them while our own queue grew. A probe of one
        request at a time (each sent once ours have drained, so nothing of ours is queued before it) measures the
        server's own pace; then the start again from `initial`."""
        self.limit = 1.0
        self.floor = None
        self.starting = True
        self._probing = True
        self._cut = self._before_cuts = None
        self._suspect = False
        self._draining = False

    def busy(self, n_at_send: int) -> None:
        """The server refused for being busy with `n_at_send` of ours in flight: fewer than that from now on."""
        self.starting = False
        self.epoch += 1
        self._samples = []
        self._cut = self._before_cuts = None
        self._draining = False
        self.limit = max(1.0, min(self.limit, n_at_send - 1.0))
