"""A small Django project served by real hypercorn processes in tests/test_served.py."""
