"""The runs area: run folders and atomic writes (folders), the env.json record
(environment), and loading a saved model or run on any backend (loading)."""
