"""The ``diamond-env`` command line and its faces (demo, report, viewer, videos, benchmarks).

Nothing in the library imports this package: it sits on top of ``training``, ``evaluation`` and
``dream``.
"""
