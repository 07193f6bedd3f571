"""The receiving side: broker subscription sync, de-duplication, waiters, dispatch.

``transport -> decode -> waiters -> dispatch (pre middleware -> handlers by
priority -> post middleware) -> monitor (history, stats)``.
"""
