"""The five screens, one per file: servers, models, experiments, runs, ledger_runs (the Ledger). Their dialogs are in
app.tui.dialogs."""
