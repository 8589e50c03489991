"""A project served by real hypercorn processes: serving, runserver and live-server tests."""
