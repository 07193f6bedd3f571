"""The ``voicebus`` command line (typer): commands in `app`, one module per group."""

from .app import app

__all__ = ["app"]
