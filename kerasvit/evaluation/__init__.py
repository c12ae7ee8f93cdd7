"""The evaluation area: metrics (numpy, scikit-learn), figures, the markdown summary,
test-time augmentation (tta) and inference timing. `python -m kerasvit.evaluate` runs the
command line (kerasvit.cli.evaluate)."""
