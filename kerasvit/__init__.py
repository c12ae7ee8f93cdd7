"""kerasvit: train, compare and explain CIFAR-10 classifiers with Keras 3 on any backend.

Importing the package does not import keras: the backend is chosen by `KERAS_BACKEND`
before the first `import keras`, and entry points check it first (see `kerasvit.backend`).
"""

__version__ = "0.1.0"

CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
