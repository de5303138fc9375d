"""Transparency harness: Starlette's own test suite, run with and without the cache around every app."""
