"""Logging setup, shared by the CLI and by every server worker process."""

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(level: str) -> None:
    """Send the service's logs to stderr once per process, at ``level``."""
    root = logging.getLogger()
    if not any(getattr(h, "_restock", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        handler._restock = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level.upper())
