"""Reliability and security tests: hostile input, faults, load shedding, the token, size limits.

A package (unlike the other test folders) so that its ``conftest`` is ``reliability.conftest`` and never
shadows ``tests/service``'s, which the service tests import as ``conftest``.
"""
