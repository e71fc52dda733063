"""MNIST as float32 pixels in [0, 1] with a seeded validation split."""

import numpy as np

from moe_tf.data import _sources
from moe_tf.data._common import Splits, check_batch_size, split_indices

MNIST_TRAIN, MNIST_TEST = 60000, 10000


def load_mnist(
    *,
    validation_size=5000,
    train_size=None,
    test_size=None,
    seed=0,
    flatten=True,
    as_dataset=False,
    batch_size=128,
    data_dir=None,
):
    """MNIST handwritten digits, split into train / validation / test.

    The validation set is carved out of the official 60,000 training images with a
    permutation seeded by `seed`; the official 10,000 test images are never used for it.

    Sources, in order: the data folder (`data_dir` or `$MOE_TF_DATA_DIR`, file
    `mnist.npz`), the verified download cache, a download through keras.

    Args:
        validation_size: images moved from the official training split to the validation split (0 for none).
        train_size: if set, keep only this many training images (a seeded random subset), for quick runs.
        test_size: if set, keep only this many test images (a seeded random subset, in file order).
        seed: seed of the validation split, the subsets and the `as_dataset` shuffle.
        flatten: `x` is `[N, 784]` if True, `[N, 28, 28]` if False.
        as_dataset: return `tf.data.Dataset`s of `(x, y)` batches instead of arrays. The training set is
            shuffled (seeded, reshuffled every epoch); validation and test keep their order.
        batch_size: batch size of the datasets (only used with `as_dataset=True`).
        data_dir: data folder; None means `$MOE_TF_DATA_DIR`, and if that is unset, the cache.

    Returns:
        `Splits(train, val, test)`, each `(x, y)`: `x` float32 in [0, 1], `y` int64 digits 0..9.

    Raises:
        ValueError: for a bad argument.
        DataUnavailableError: when the data can be found nowhere (offline, no data folder).

    Example (reads or downloads the data)::

        (x_train, y_train), (x_val, y_val), (x_test, y_test) = load_mnist()
        x_train.shape, x_val.shape, x_test.shape  # (55000, 784) (5000, 784) (10000, 784)
    """
    if as_dataset:
        check_batch_size(batch_size)
    x_train, y_train, x_test, y_test = _sources.load_group("mnist", data_dir)
    train_idx, val_idx, test_idx = split_indices(
        len(x_train),
        len(x_test),
        validation_size=validation_size,
        train_size=train_size,
        test_size=test_size,
        seed=seed,
    )
    shape = (-1, 784) if flatten else (-1, 28, 28)

    def take(x, y, idx):
        return (x[idx].astype(np.float32) / np.float32(255.0)).reshape(shape), y[idx].astype(np.int64)

    splits = Splits(take(x_train, y_train, train_idx), take(x_train, y_train, val_idx), take(x_test, y_test, test_idx))
    if not as_dataset:
        return splits
    return Splits(*(to_dataset(xy, batch_size, shuffle=(i == 0), seed=seed) for i, xy in enumerate(splits)))


def to_dataset(xy, batch_size, shuffle, seed):
    """A batched, prefetched `tf.data.Dataset` of `(x, y)`; shuffled (seeded, every epoch) if `shuffle`."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(xy)
    if shuffle and len(xy[1]):
        ds = ds.shuffle(len(xy[1]), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
