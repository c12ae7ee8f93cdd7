"""Data for every contender, and the input-pipeline measurement (TensorFlow only).

The batches all contenders train on are the first few batches of kerasvit's own training
pipeline (`kerasvit.data.stream.training_stream` on the CIFAR-10 train split, with the model's
augmentation, at the model's input size), saved once so that every process trains on the
identical images.
"""

import time

import numpy as np

NUM_CLASSES = 10


def load_train_split(spec):
    from kerasvit.data import cifar

    if spec["synthetic"]:
        rng = np.random.default_rng(0)
        count = spec["synthetic_images"]
        images = rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, NUM_CLASSES, size=count).astype(np.int64)
        return images, labels
    config = spec["config"]
    splits = cifar.load_splits(config["data_dir"], config["validation_size"], 0)
    return splits["train"]


class Pipeline:
    def __init__(self, spec):
        import tensorflow as tf

        from kerasvit.data import stream

        self.tf = tf
        self.spec = spec
        self.batch_size = spec["batch_size"]
        started = time.perf_counter()
        images, labels = load_train_split(spec)
        self.load_s = time.perf_counter() - started
        self.num_images = len(images)
        config = spec["config"]
        # What training reads: kerasvit.data.stream.training_stream, epoch after epoch.
        self.dataset = stream.training_stream(
            images, labels, image_size=spec["image_size"], batch_size=self.batch_size,
            steps=len(images) // self.batch_size, augmentation=config["augmentation"],
            seed=config["seed"], epochs=1_000_000)

    def write_batches(self, path, count, scale_to_unit):
        """The first `count` training batches as numpy, for the model contenders."""
        xs, ys = [], []
        for images, one_hot in self.dataset.take(count):
            xs.append(images.numpy())
            ys.append(one_hot.numpy())
        x = np.stack(xs).astype(np.float32)
        if scale_to_unit:
            x = x / 127.5 - 1.0  # ViT-B/16's [-1, 1] input scaling (ViTImageConverter)
        y = np.stack(ys).astype(np.float32)
        np.savez(path, x=x, y=y, labels=y.argmax(-1).astype(np.int64))
        return list(x.shape)

    def measure(self, batches):
        """`batches` batches from a fresh iterator (empty prefetch buffer), each converted to
        numpy as Keras does for JAX and torch. The first batch (shuffle-buffer fill) is
        fetched before the clock starts; the iterator is dropped afterwards so its
        background threads do not run while other contenders are timed."""
        iterator = iter(self.dataset)
        next(iterator)
        times = []
        start = last = time.perf_counter()
        for _ in range(batches):
            images, labels = next(iterator)
            images.numpy()
            labels.numpy()
            now = time.perf_counter()
            times.append(now - last)
            last = now
        elapsed = time.perf_counter() - start
        del iterator
        return {"seconds": elapsed, "batches": batches, "images": batches * self.batch_size,
                "batch_times": times}

    def info(self):
        config = self.spec["config"]
        return {"train_images": self.num_images, "load_s": self.load_s,
                "augmentation": config["augmentation"],
                "image_size": list(self.spec["image_size"]),
                "synthetic": self.spec["synthetic"]}
