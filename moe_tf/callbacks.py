"""Callbacks: `RoutingStats` (per-expert load of every MoE layer, epoch by epoch) and `StepTimer` (ms per step)."""

import time

import keras
import numpy as np
from keras import ops


class RoutingStats(keras.callbacks.Callback):
    """Keeps the per-expert load fractions of each `MixtureOfExperts` layer.

    `fit` logs scalar routing summaries by itself (max load, drops, entropy,
    losses). This callback adds the full per-expert picture: after every
    epoch it stores, for each MoE layer in the model, the fraction of the
    epoch's routed assignments that went to each expert, on the training
    data and (when `fit` has validation data) on the validation data. With
    `log_dir` it also writes them to TensorBoard (one scalar per expert and
    a histogram of expert ids weighted by load).

    Args:
        log_dir: optional TensorBoard log directory.

    Attributes:
        history: `{layer_name: np.ndarray [epochs, E]}` training load
            fractions; each row sums to 1 (or is all 0 if nothing was routed).
        val_history: the same on validation data (empty without validation).

    Example (a model with a MoE layer named "moe" and 8 experts)::

        stats = RoutingStats()
        model.fit(x, y, epochs=3, callbacks=[stats])
        stats.history["moe"].shape  # (3, 8): epochs x experts
    """

    def __init__(self, log_dir=None):
        super().__init__()
        self.log_dir = log_dir
        self.history = {}
        self.val_history = {}
        self._layers = []
        self._train_snapshot = None
        self._writer = None

    def _moe_layers(self):
        from moe_tf.layers.linear_moe import LinearExpertsMoE
        from moe_tf.layers.moe import MixtureOfExperts

        return [
            layer for layer in self.model._flatten_layers() if isinstance(layer, (MixtureOfExperts, LinearExpertsMoE))
        ]

    def _read(self):
        return {layer.name: ops.convert_to_numpy(layer.routing_metrics.expert_load()) for layer in self._layers}

    def on_train_begin(self, logs=None):
        self._layers = self._moe_layers()
        if not self._layers:
            raise ValueError("RoutingStats found no MixtureOfExperts or LinearExpertsMoE layer in the model.")
        for layer in self._layers:
            self.history.setdefault(layer.name, [])
            self.val_history.setdefault(layer.name, [])
        if self.log_dir is not None:
            import tensorflow as tf

            self._writer = tf.summary.create_file_writer(str(self.log_dir))

    def on_epoch_begin(self, epoch, logs=None):
        self._train_snapshot = None

    def on_test_begin(self, logs=None):
        # Validation inside fit is about to reset the metrics: keep the
        # training epoch's counts first.
        if self._layers and self._train_snapshot is None:
            self._train_snapshot = self._read()

    def on_epoch_end(self, epoch, logs=None):
        validated = self._train_snapshot is not None
        train = self._train_snapshot if validated else self._read()
        val = self._read() if validated else None
        for name, load in train.items():
            self.history[name] = np.vstack([np.reshape(self.history[name], (-1, load.size)), load[None]])
            if val is not None:
                self.val_history[name] = np.vstack(
                    [np.reshape(self.val_history[name], (-1, load.size)), val[name][None]]
                )
        if self._writer is not None:
            self._write(epoch, train, "train")
            if val is not None:
                self._write(epoch, val, "validation")
        self._train_snapshot = None

    def _write(self, epoch, loads, split):
        import tensorflow as tf

        with self._writer.as_default(step=epoch):
            for name, load in loads.items():
                for e, value in enumerate(load):
                    tf.summary.scalar(f"{name}/{split}/load_expert_{e}", float(value))
                # Histogram of expert ids, weighted by load: its bars are the loads.
                ids = np.repeat(np.arange(load.size), np.round(load * 1000).astype(int))
                tf.summary.histogram(f"{name}/{split}/expert_load", ids, buckets=load.size)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class StepTimer(keras.callbacks.Callback):
    """Times every training step of `fit`; `median_ms` is the step time after compilation.

    The first step of `fit` traces the model and, with `jit_compile=True`,
    compiles it with XLA: it takes seconds, not milliseconds, and is left
    out. A differently shaped batch (the last, partial one of an epoch)
    compiles again; the median ignores such rare outliers. Time is the wall
    clock between `on_train_batch_begin` and `on_train_batch_end`, which
    includes reading the loss back from the device, as `fit` does anyway.

    Attributes:
        times: seconds of every timed step (the first one excluded), in order.
        first_s: seconds of the first step (tracing, and XLA's compilation
            with `jit_compile=True`); None before a step ran.

    Example (any compiled model)::

        timer = StepTimer()
        model.fit(x, y, epochs=1, callbacks=[timer])
        timer.median_ms()  # e.g. 7.9
    """

    def __init__(self):
        super().__init__()
        self.times = []
        self.first_s = None
        self._start = None
        self._seen_first = False

    def on_train_begin(self, logs=None):
        self.times, self.first_s, self._seen_first = [], None, False

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if logs and "loss" in logs:
            float(logs["loss"])  # wait for the step to finish
        elapsed = time.perf_counter() - self._start
        if self._seen_first:
            self.times.append(elapsed)
        else:
            self.first_s = elapsed
        self._seen_first = True

    def median_ms(self):
        """Median milliseconds per training step after the first one; None before two steps ran."""
        return float(np.median(self.times) * 1e3) if self.times else None
