"""Runs seen from outside, through the ledger dir: what the TUI's run monitor and Experiments screen call. No UI here.

    from app.runs.running import running_runs, RunningRun          # which runs are running now, on any host
    running_runs(ledger_dir) -> list[RunningRun]                # index `running` rows + journal header (model, total,
                                                          # hosts, Slurm ids), feed and log paths; poll every few s
    recent_runs(ledger_dir, ended=10) -> list[RunningRun]       # those, then the last 10 that ended (status, last
                                                          # error, counts, duration): what the Runs screen lists

    from app.runs.states import run_state                 # the ledger's words for where a run is, whoever tells it:
    run_state(recorded, last_error, ended, exit_code, exit_line).words   # "completed", "failed: why", never "exit 143"

    from app.runs.listing import listing, title_counts    # the Runs screen's rows and its title's counts, from one
    listing(recent_runs(...), started_here, followed)     # set of facts so that they agree

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
