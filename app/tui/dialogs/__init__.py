"""The modal dialogs the five screens open (one per file): forms, confirmations, details and reports."""
