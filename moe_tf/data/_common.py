"""Shared pieces of `moe_tf.data`: the result types, the error, and the seeded split."""

from typing import Any, NamedTuple

import numpy as np

from moe_tf import _checks


class DataUnavailableError(RuntimeError):
    """A dataset could be found neither in the data folder, nor in the cache, nor online.

    The message always says which file is missing or broken and what to do about it
    (set `MOE_TF_DATA_DIR`, or prepare a folder with `python -m moe_tf.data download DIR`).
    """


class Splits(NamedTuple):
    """Train / validation / test splits of one dataset.

    Each field is an `(x, y)` tuple of arrays, or a `tf.data.Dataset` of
    `(x, y)` batches when the loader was called with `as_dataset=True`.
    """

    train: Any
    val: Any
    test: Any


class ImdbData(NamedTuple):
    """What `load_imdb` returns.

    Attributes:
        train, val, test: as in `Splits`.
        vectorizer: the `keras.layers.TextVectorization` layer, adapted on the
            training split only. Put it in front of a model to score raw text.
        vocabulary_size: number of features (`"ngrams"` view) or number of token
            ids including 0 = padding and 1 = out-of-vocabulary (`"sequence"` view).
    """

    train: Any
    val: Any
    test: Any
    vectorizer: Any
    vocabulary_size: int


def check_sizes(n_train, n_test, validation_size, train_size, test_size):
    """Validates the split sizes against the official split sizes; returns them as ints (or None)."""
    if not _checks.is_int(validation_size) or not 0 <= validation_size < n_train:
        raise ValueError(
            f"`validation_size` must be an integer with 0 <= validation_size < {n_train} (the size of the "
            f"official training split); received validation_size={validation_size!r}."
        )
    train_size = _checks.positive_int("train_size", train_size, allow_none=True)
    test_size = _checks.positive_int("test_size", test_size, allow_none=True)
    if train_size is not None and train_size > n_train - validation_size:
        raise ValueError(
            f"`train_size` must be at most {n_train - validation_size} (the {n_train} official training "
            f"examples minus validation_size={validation_size}), or None for all of them; "
            f"received train_size={train_size}."
        )
    if test_size is not None and test_size > n_test:
        raise ValueError(
            f"`test_size` must be at most {n_test} (the size of the official test split), or None for all "
            f"of it; received test_size={test_size}."
        )
    return int(validation_size), train_size, test_size


def split_indices(n_train, n_test, *, validation_size, train_size=None, test_size=None, seed=0):
    """Seeded train / validation / test indices into the official splits.

    The validation set is carved out of the official *training* split with a seeded
    permutation; the test split is never touched except to take an optional seeded
    subset. Every index array is sorted, so examples keep their file order.

    Returns:
        `(train_idx, val_idx, test_idx)`, int64 arrays. `train_idx` and `val_idx`
        are disjoint subsets of `range(n_train)`; `test_idx` is a subset of `range(n_test)`.
    """
    validation_size, train_size, test_size = check_sizes(n_train, n_test, validation_size, train_size, test_size)
    if not _checks.is_int(seed):
        raise ValueError(f"`seed` must be an integer; received seed={seed!r}.")
    perm = np.random.default_rng(seed).permutation(n_train)
    val_idx = np.sort(perm[:validation_size])
    rest = perm[validation_size:]
    train_idx = np.sort(rest if train_size is None else rest[:train_size])
    if test_size is None:
        test_idx = np.arange(n_test)
    else:
        test_idx = np.sort(np.random.default_rng([seed, 1]).permutation(n_test)[:test_size])
    return train_idx.astype(np.int64), val_idx.astype(np.int64), test_idx.astype(np.int64)


def check_batch_size(batch_size):
    return _checks.positive_int("batch_size", batch_size)
