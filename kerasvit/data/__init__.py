"""The data area: CIFAR-10 and its splits and size checks (cifar), augmentations (augment)
and the tf.data streams that feed every backend (stream). TensorFlow appears in kerasvit
only here (augment, stream, through tensorflow_cpu) and in TensorBoard logging; `cifar`
imports it only to load the data, so its checks run before any framework loads."""
