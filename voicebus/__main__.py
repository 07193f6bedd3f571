"""``python -m voicebus`` runs the CLI."""

from .cli import app

app()
