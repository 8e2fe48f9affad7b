"""Helpers shared by the integration tests: a recording backend and a pingap runner."""
