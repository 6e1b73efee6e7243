"""Judging agents and world models: real-game evaluation and its baselines (``real_game``), agent
files (``agent_files``), and the held-out fidelity of a world model (``wm_eval``, ``fidelity``,
``ball``)."""
