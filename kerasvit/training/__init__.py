"""The training area: the recipe (optimizer, schedule, compile), precision, callbacks,
checkpoints for --resume, time budgets, and the loop that ties them together (loop.fit).

Import after the backend is fixed (kerasvit.cli.check_backend): these modules import keras.
"""
