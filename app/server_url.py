"""One spelling for an Ollama server's address, wherever it comes from (experiment, $OLLAMA_HOST, user config)."""

from __future__ import annotations

from urllib.parse import urlsplit


def server_url(text: str) -> str:
    """`gpu-n57:48362`, `http://gpu-n57:48362/` → `http://gpu-n57:48362`; ValueError when it is not a server address."""
    text = text.strip()
    url = text if "://" in text else f"http://{text}"
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.username is not None or parts.password is not None:
        # they would be printed in host lines and recorded in every run's ledger header; never echo them either
        shown = f"{parts.scheme}://***@{parts.hostname or '?'}" + (f":{port}" if port else "")
        raise ValueError(f"{shown!r} carries a user name or password, which would be written to the ledger and the "
                         "logs; Ollama itself has no login")
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None or parts.path not in ("", "/") \
            or parts.query or parts.fragment:
        raise ValueError(f"{text!r} is not a server address")
    return f"{parts.scheme}://{parts.netloc}"
