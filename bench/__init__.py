"""Benchmarks for vtpm-stack: they print figures and never pass or fail on time.

Run them as ``python -m bench transmit`` and ``python -m bench load``; each prints an
aligned table and, with ``--json FILE`` (``-`` for stdout), the same figures as JSON.
"""
