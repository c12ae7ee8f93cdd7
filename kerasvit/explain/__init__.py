"""The explain area: maps (the function API: `explain_batch`, `explain_image`), gradcam,
attention (per-layer maps and rollout), overlays. `python -m kerasvit.explain` runs the
command line (kerasvit.cli.explain)."""
