"""IMDB movie reviews: raw text, and two vectorised views (tf-idf n-grams, token sequences)."""

import re

import numpy as np

from moe_tf import _checks
from moe_tf.data import _sources
from moe_tf.data._common import ImdbData, Splits, check_batch_size, split_indices
from moe_tf.data._mnist import to_dataset

# Features of the "ngrams" view: the most frequent 1- and 2-grams of the training split.
NGRAM_MAX_TOKENS = 100_000
SEQUENCE_MAX_TOKENS = 20_000
VIEWS = ("ngrams", "sequence")
TRUNCATINGS = ("post", "pre")
WEIGHTINGS = ("tfidf", "nb")
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_VECTORIZE_CHUNK = 512


def clean_text(text):
    """Replaces every HTML line break (`<br />`, `<br/>`, `<br>`) by a space; nothing else changes."""
    return _BR.sub(" ", text)


def load_imdb_text(*, validation_size=2500, train_size=None, test_size=None, seed=0, data_dir=None):
    """IMDB reviews (Maas et al. 2011) as raw text, split into train / validation / test.

    The validation set is carved out of the official 25,000 training reviews with a
    permutation seeded by `seed`; the official 25,000 test reviews are never used for it.
    The only cleaning is that HTML line breaks (`<br />`) become a space.

    Sources, in order: the data folder (`data_dir` or `$MOE_TF_DATA_DIR`, files
    `imdb/train.jsonl.gz`, `imdb/test.jsonl.gz`), the verified download cache, a
    download through `tensorflow_datasets` (`imdb_reviews/plain_text`).

    Args:
        validation_size: reviews moved from the official training split to the validation split (0 for none).
        train_size: if set, keep only this many training reviews (a seeded random subset).
        test_size: if set, keep only this many test reviews (a seeded random subset, in file order).
        seed: seed of the validation split and of the subsets.
        data_dir: data folder; None means `$MOE_TF_DATA_DIR`, and if that is unset, the cache.

    Returns:
        `Splits(train, val, test)`, each `(x, y)`: `x` a numpy array (dtype object) of Python str, `y` int64 (0 negative, 1 positive).

    Example (reads or downloads the data)::

        (x_train, y_train), (x_val, y_val), (x_test, y_test) = load_imdb_text()
        len(x_train), len(x_val), len(x_test)  # 22500 2500 25000
    """
    (train_texts, y_train), (test_texts, y_test) = _sources.load_group("imdb", data_dir)
    train_idx, val_idx, test_idx = split_indices(
        len(y_train),
        len(y_test),
        validation_size=validation_size,
        train_size=train_size,
        test_size=test_size,
        seed=seed,
    )

    def take(texts, y, idx):
        x = np.empty(len(idx), dtype=object)  # object, not "<U13704": a fixed-width array would take 1.2 GB
        x[:] = [clean_text(texts[i]) for i in idx]
        return x, y[idx]

    return Splits(
        take(train_texts, y_train, train_idx), take(train_texts, y_train, val_idx), take(test_texts, y_test, test_idx)
    )


def load_imdb(
    view="ngrams",
    *,
    validation_size=2500,
    train_size=None,
    test_size=None,
    seed=0,
    max_tokens=None,
    ngrams=2,
    sequence_length=256,
    as_dataset=False,
    batch_size=64,
    normalize=True,
    weighting="tfidf",
    data_dir=None,
    truncating="post",
):
    """IMDB reviews, vectorised by a `keras.layers.TextVectorization` adapted on the training split only.

    Splits are those of `load_imdb_text` (same arguments, same seed). The vectorizer never
    sees the validation or test texts: a word that occurs only there is out of vocabulary.

    Views:
        "ngrams": bag of 1..`ngrams`-grams, `output_mode="tf_idf"`, the `max_tokens` most frequent
            n-grams of the training split (default 100,000). Column 0 counts out-of-vocabulary n-grams.
            With `normalize=True` (default, as scikit-learn's `TfidfVectorizer`) every row is divided
            by its L2 norm; `vectorizer(texts)` gives the rows before that division.
            Without `as_dataset`, `x` is a `tf.SparseTensor` `[N, vocabulary_size]` float32 (the dense
            matrix would take 10 GB); densify slices with `tf.sparse.to_dense` or use `as_dataset=True`,
            which yields dense float32 `[batch, vocabulary_size]` batches gathered from the sparse
            matrix (the texts are tokenised once, here, not every epoch).
            With `weighting="nb"` the values are not tf-idf but Naive-Bayes log-count ratios
            (Wang & Manning 2012, "Baselines and Bigrams"): an n-gram present in a review gets
            `r_j = log((p_j/|p|_1) / (q_j/|q|_1))`, with `p = 1 + ` the number of positive training
            reviews that contain it and `q` likewise for negative ones; absent n-grams are 0. `r` is
            computed from the training split's labels only, then rows are L2-normalised as above.
        "sequence": token ids, `output_mode="int"`, the `max_tokens` most frequent words (default 20,000,
            including 0 = padding and 1 = out-of-vocabulary), truncated to `sequence_length` (see
            `truncating`) and padded with 0 at the end. `x` is int32 `[N, sequence_length]`;
            `padding_mask(x)` marks the real tokens.

    Args:
        view: "ngrams" or "sequence".
        validation_size, train_size, test_size, seed, data_dir: as in `load_imdb_text`; `seed` also seeds
            the `as_dataset` shuffle.
        max_tokens: vocabulary size (None: 100,000 for "ngrams", 20,000 for "sequence").
        ngrams: largest n-gram length of the "ngrams" view (1 = words only, 2 = words and bigrams).
        sequence_length: length of the "sequence" view.
        as_dataset: return `tf.data.Dataset`s of `(x, y)` batches; train is shuffled every epoch.
        batch_size: batch size of the datasets.
        normalize: L2-normalise the rows of the "ngrams" view.
        weighting: values of the "ngrams" view: "tfidf" (default) or "nb" (Naive-Bayes log-count
            ratios of the n-grams present, from the training labels only; see above).
        truncating: which tokens of a review longer than `sequence_length` the "sequence" view keeps:
            "post" (default) drops the end and keeps the first tokens; "pre" drops the beginning and keeps
            the last tokens (as `keras.utils.pad_sequences` does by default; on IMDB the end of a review
            often holds its verdict). Padding is at the end either way. The returned `vectorizer` always
            keeps the first tokens.

    Returns:
        `ImdbData(train, val, test, vectorizer, vocabulary_size)`; `y` is int64 (0 negative, 1 positive).

    Example (reads or downloads the data)::

        data = load_imdb("ngrams", as_dataset=True)
        x, y = next(iter(data.train))  # x: [64, 100000] float32
    """
    import keras
    import tensorflow as tf

    _checks.one_of("view", view, VIEWS)
    max_tokens = _checks.positive_int("max_tokens", max_tokens, allow_none=True)
    if max_tokens is None:
        max_tokens = NGRAM_MAX_TOKENS if view == "ngrams" else SEQUENCE_MAX_TOKENS
    if max_tokens < 3:
        raise ValueError(f"`max_tokens` must be at least 3 (it counts the padding and OOV ids); received {max_tokens}.")
    ngrams = _checks.positive_int("ngrams", ngrams)
    sequence_length = _checks.positive_int("sequence_length", sequence_length)
    if as_dataset:
        check_batch_size(batch_size)
    if not isinstance(normalize, bool):
        raise ValueError(f"`normalize` must be True or False; received normalize={normalize!r}.")  # noqa: TRY004
    _checks.one_of("weighting", weighting, WEIGHTINGS)
    _checks.one_of("truncating", truncating, TRUNCATINGS)

    text = load_imdb_text(
        validation_size=validation_size, train_size=train_size, test_size=test_size, seed=seed, data_dir=data_dir
    )
    if view == "ngrams":
        vectorizer = keras.layers.TextVectorization(max_tokens=max_tokens, output_mode="tf_idf", ngrams=ngrams)
    else:
        vectorizer = keras.layers.TextVectorization(
            max_tokens=max_tokens, output_mode="int", output_sequence_length=sequence_length
        )
    vectorizer.adapt(tf.data.Dataset.from_tensor_slices(text.train[0]).batch(_VECTORIZE_CHUNK))
    vocabulary_size = int(vectorizer.vocabulary_size())

    splits = []
    ratios = None
    for i, (x_text, y) in enumerate(text):
        if view == "ngrams":
            x = _tfidf_matrix(vectorizer, x_text, vocabulary_size, normalize and weighting == "tfidf")
            if weighting == "nb":
                if ratios is None:  # the first split is train: the ratios never see val or test labels
                    ratios = nb_log_count_ratios(x, y, vocabulary_size)
                x = _nb_matrix(x, ratios, normalize)
            splits.append(_sparse_dataset(x, y, batch_size, i == 0, seed) if as_dataset else (x, y))
        else:
            x = _token_matrix(vectorizer, x_text, sequence_length, truncating)
            splits.append(to_dataset((x, y), batch_size, i == 0, seed) if as_dataset else (x, y))
    return ImdbData(*splits, vectorizer=vectorizer, vocabulary_size=vocabulary_size)


def padding_mask(tokens):
    """True where `tokens` holds a real token, False on padding (id 0).

    Args:
        tokens: `[N, L]` integer token ids (numpy array or tensor), 0 = padding.

    Returns:
        A bool array of the same shape: a numpy array for numpy input, a tensor otherwise.

    Example:
    >>> padding_mask(np.array([[5, 2, 0, 0]])).tolist()
    [[True, True, False, False]]
    """
    if isinstance(tokens, (np.ndarray, list, tuple)):
        return np.asarray(tokens) != 0
    from keras import ops

    return ops.not_equal(tokens, 0)


def _chunks(texts):
    for start in range(0, len(texts), _VECTORIZE_CHUNK):
        yield texts[start : start + _VECTORIZE_CHUNK]


def _token_matrix(vectorizer, texts, sequence_length, truncating="post"):
    if truncating == "post":
        parts = [np.asarray(vectorizer(chunk), dtype=np.int32) for chunk in _chunks(texts)]
        return np.concatenate(parts) if parts else np.zeros((0, sequence_length), np.int32)
    # "pre": a twin vectorizer that does not cut (rows padded to the chunk's longest review),
    # then the last `sequence_length` real tokens of each row, moved to the front.
    import keras

    full = keras.layers.TextVectorization(output_mode="int", vocabulary=vectorizer.get_vocabulary())
    out = np.zeros((len(texts), sequence_length), np.int32)
    for start, chunk in zip(range(0, len(texts), _VECTORIZE_CHUNK), _chunks(texts)):
        ids = np.asarray(full(chunk), dtype=np.int32)  # [chunk, longest]
        lengths = (ids != 0).sum(axis=1)  # 0 only pads (the end of a row): a row's tokens are its prefix
        for row, n in enumerate(lengths):
            kept = ids[row, max(0, n - sequence_length) : n]
            out[start + row, : len(kept)] = kept
    return out


def _tfidf_matrix(vectorizer, texts, vocabulary_size, normalize):
    """The tf-idf rows of `texts` as a row-major `tf.SparseTensor` [N, V] float32.

    Equal to `vectorizer(texts)` (checked in the tests) but never dense: a sparse `"count"`
    twin of the vectorizer counts the n-grams and the counts are scaled by the adapted idf
    weights. (Keras 3.15's `TextVectorization(output_mode="tf_idf", sparse=True)` fails at call.)
    """
    import keras
    import tensorflow as tf

    idf = getattr(getattr(vectorizer, "_lookup_layer", None), "idf_weights_const", None)
    counter = None
    if idf is not None:
        idf = np.asarray(idf, dtype=np.float32)
        counter = keras.layers.TextVectorization(
            output_mode="count",
            ngrams=vectorizer.get_config()["ngrams"],
            sparse=True,
            vocabulary=vectorizer.get_vocabulary(),
        )
    rows, cols, values = [], [], []
    for start, chunk in zip(range(0, len(texts), _VECTORIZE_CHUNK), _chunks(texts)):
        if counter is not None:
            counts = counter(chunk)
            r, c = counts.indices.numpy().T
            v = counts.values.numpy().astype(np.float32) * idf[c]
        else:  # fallback if Keras renames its private idf attribute: dense chunks
            dense = np.asarray(vectorizer(chunk), dtype=np.float32)
            r, c = np.nonzero(dense)
            v = dense[r, c]
        rows.append(r + start)
        cols.append(c)
        values.append(v)
    rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    cols = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    values = np.concatenate(values) if values else np.zeros(0, np.float32)
    order = np.lexsort((cols, rows))
    rows, cols, values = rows[order], cols[order], values[order]
    if normalize:
        values = _l2_normalize_rows(rows, values, len(texts))
    indices = np.stack([rows, cols], axis=1).astype(np.int64)
    return tf.SparseTensor(indices, values, dense_shape=[len(texts), vocabulary_size])


def nb_log_count_ratios(x, y, vocabulary_size, alpha=1.0):
    """Naive-Bayes log-count ratios `r = log((p/|p|_1) / (q/|q|_1))` of binarised features.

    Args:
        x: `tf.SparseTensor` `[N, V]`; a stored entry means "the feature is present".
        y: `[N]` labels, 1 positive, 0 negative.
        vocabulary_size: V.
        alpha: smoothing count added to every feature (Wang & Manning use 1).

    Returns:
        float32 `[V]`: positive for features more frequent in positive reviews.
    """
    rows, cols = np.asarray(x.indices).T
    positive = np.asarray(y)[rows] == 1
    p = alpha + np.bincount(cols[positive], minlength=vocabulary_size)
    q = alpha + np.bincount(cols[~positive], minlength=vocabulary_size)
    return np.log((p / p.sum()) / (q / q.sum())).astype(np.float32)


def _l2_normalize_rows(rows, values, num_rows):
    """Divides the stored values of each row of a sparse matrix (COO `rows`, `values`) by the row's L2 norm."""
    if not len(values):
        return values
    norms = np.sqrt(np.bincount(rows, weights=values.astype(np.float64) ** 2, minlength=num_rows))
    return (values / np.maximum(norms[rows], 1e-12)).astype(np.float32)  # an all-zero row stays 0, not NaN


def _nb_matrix(x, ratios, normalize):
    """Replaces the stored values of `x` by the ratios of their columns (binarise, then scale)."""
    import tensorflow as tf

    indices = np.asarray(x.indices)
    rows, cols = indices.T
    values = ratios[cols]
    if normalize:
        values = _l2_normalize_rows(rows, values, int(x.dense_shape[0]))
    return tf.SparseTensor(indices, values, dense_shape=x.dense_shape)


def _sparse_dataset(x, y, batch_size, shuffle, seed):
    """Dense `(x, y)` batches gathered from the sparse matrix `x` (row-major sorted, as built above)."""
    import tensorflow as tf

    n, width = int(x.dense_shape[0]), int(x.dense_shape[1])
    rows = x.indices[:, 0]
    cols = tf.RaggedTensor.from_value_rowids(x.indices[:, 1], rows, nrows=n)
    vals = tf.RaggedTensor.from_value_rowids(x.values, rows, nrows=n)
    labels = tf.constant(y)

    def densify(idx):
        c, v = tf.gather(cols, idx), tf.gather(vals, idx)
        coords = tf.stack([c.value_rowids(), c.flat_values], axis=1)
        dense = tf.scatter_nd(coords, v.flat_values, tf.stack([tf.size(idx, out_type=tf.int64), width]))
        return tf.ensure_shape(dense, [None, width]), tf.gather(labels, idx)

    ds = tf.data.Dataset.range(n)
    if shuffle and n:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).map(densify, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
