"""The user's own settings: `files` (where they live, how they are written: owner-only, whole or not at all) and
`user` (`~/.config/notes-tui/config.toml` read into `UserConfig`). Nothing is imported here, so a run that reads only
a token file does not pay for pydantic."""
