"""Inference timing: the median wall time of a model call on a fixed batch, after
warm-up, within a time budget (device synced by copying the output to numpy)."""

import time

import numpy as np

from kerasvit import models

WARMUP_CALLS = 2  # The first calls trace/compile (TF graphs, XLA) and fill caches.
TIMING_BUDGET_S = 30.0  # Timing stops early past this, after at least MIN_TIMED_CALLS calls.
MIN_TIMED_CALLS = 3


def median_call_seconds(model, batch, repeats):
    """Median wall time of `model.predict_on_batch(batch)` after warm-up. predict_on_batch
    returns numpy, so every timed call includes the device sync on all backends."""
    for _ in range(WARMUP_CALLS):
        model.predict_on_batch(batch)
    times = []
    started = time.perf_counter()
    while len(times) < repeats:
        start = time.perf_counter()
        model.predict_on_batch(batch)
        times.append(time.perf_counter() - start)
        if len(times) >= MIN_TIMED_CALLS and time.perf_counter() - started > TIMING_BUDGET_S:
            break
    return float(np.median(times)), len(times)


def measure_speed(model, images, batch_size, repeats):
    """Throughput (images/s at `batch_size`) and batch-1 latency (ms), both medians."""
    from kerasvit.data import stream

    batch_size = min(batch_size, len(images))
    batch = stream.prepare_images(images[:batch_size], models.feed_size(model, images.shape[1:3]))
    batch_seconds, batches = median_call_seconds(model, batch, repeats)
    single_seconds, singles = median_call_seconds(model, batch[:1], 3 * repeats)
    return {
        "images_per_s": batch_size / batch_seconds,
        "throughput_batch_size": batch_size,
        "latency_ms": 1000.0 * single_seconds,
        "timing_method": (
            f"model.predict_on_batch on in-memory images (no input pipeline); median of "
            f"{batches} batches of {batch_size} and of {singles} single images, after "
            f"{WARMUP_CALLS} warm-up calls each; the output is copied to numpy, which syncs "
            f"the device."),
    }
