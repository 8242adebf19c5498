"""Runs seen from outside, through the ledger dir: what the TUI's run monitor and Experiments screen call. No UI here.

    from app.runs.running import running_runs, RunningRun          # which runs are running now, on any host
    running_runs(ledger_dir) -> list[RunningRun]                # index `running` rows + journal header (model, total,
                                                          # hosts, Slurm ids), feed and log paths; poll every few s

    from app.runs.follow import FeedFollower, FeedUpdate  # one run, note by note, from its live feed
    f = FeedFollower(ledger_dir, run_id)
    f.poll() -> FeedUpdate                                # new unit lines since the last poll, counts now, rates,
                                                          # header, end line, what the run waits on (its servers,
                                                          # writing its results); reads only new bytes (every 0.5-1 s)

    from app.runs.stop import request_stop, StopSent      # stop gracefully from anywhere
    request_stop(ledger_dir, run) -> StopSent             # SIGTERM on this host, a stop request for another host

    from app.runs.detach import start_detached, Detached  # "run here" that survives the terminal
    start_detached(file, ledger_dir, limit=None, rerun_invalid=False, shard=None) -> Detached(pid, run_id, log)

Every call is cheap, blocking file I/O (no threads, no event loop): call it from a thread worker. The live feed is
provisional (ledger/feed.py); the journal and the index built from it are the record.
"""
