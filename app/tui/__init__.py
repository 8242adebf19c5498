"""The Textual app: screens, widgets, one stylesheet. Nothing below app.tui imports from here."""
