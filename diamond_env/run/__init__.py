"""Run plumbing shared by every layer: checked file reading (``safe_io``), atomic files and resume
state (``checkpoint``), default paths, metrics, progress bars, ``run.json`` and options
dataclasses."""
