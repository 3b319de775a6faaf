"""Shared by every test: the secret leak check (tests/leakcheck.py)."""

pytest_plugins = ("tests.leakcheck",)
