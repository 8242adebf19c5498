"""`notes-tui doctor`: the whole setup checked at once, each check one line — ok, warn or fail, what was found and the
fix. `findings` (the line, its rendering, the runner that keeps every check to itself) and `checks` (what is
checked: Slurm, the user config and profiles, the models directory, the experiments' .env and MySQL, the ledger dir,
the known servers, the terminal, the embedded model). No screen here: the CLI prints, the TUI's help points at it.
Nothing is imported here, so `import app.doctor.findings` does not pay for the checks' libraries."""
