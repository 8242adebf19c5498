"""llama.cpp's own messages (context sizes, model metadata, warnings such as "n_ctx_per_seq < n_ctx_train") belong
in a debug log, not in `check` output, a run's progress lines or the TUI's terminal: llama.cpp writes them to the
process's stderr from C, past Python's logging, unless a callback takes them. This one hands them to the logger
`notes_tui.llama_cpp` at debug level, and to the file `$NOTES_TUI_LLAMA_LOG` when that is set (to read them)."""

from __future__ import annotations

import logging
import os

log = logging.getLogger("notes_tui.llama_cpp")
LOG_FILE_ENV = "NOTES_TUI_LLAMA_LOG"
_callback = None  # kept alive: llama.cpp calls it from C for as long as the process runs


def route_llama_logs() -> None:
    """Install the callback once, before the first model is loaded."""
    global _callback
    if _callback is not None:
        return
    import ctypes

    import llama_cpp

    path = os.environ.get(LOG_FILE_ENV)
    if path and not log.handlers:
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.DEBUG)

    @llama_cpp.llama_log_callback
    def to_debug_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        message = text.decode("utf-8", "replace").rstrip("\n")
        if message:
            log.debug(message)

    _callback = to_debug_log
    llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))
