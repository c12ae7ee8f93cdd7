"""The compare area: one model on every backend (backends: the orchestrator, which runs
worker in a process per backend and writes report), and finished runs side by side
(leaderboard, `python -m kerasvit.compare_models`)."""
