"""Side-connection tools on the public API only: retained reads, dead letters, status."""
