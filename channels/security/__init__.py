"""Protections for connections: see :mod:`channels.security.websocket`."""
