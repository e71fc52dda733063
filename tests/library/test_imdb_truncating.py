"""`load_imdb("sequence", truncating=...)`: keeping the first or the last tokens of long reviews.

Uses the small fixture IMDB of `tests/library/test_data.py` (no network, no real data).
"""

import numpy as np
import pytest
from test_data import data_dir, isolated  # noqa: F401  (fixtures: a fake data folder, no network)

from moe_tf.data import load_imdb, load_imdb_text, padding_mask

LENGTH = 12


def _expected(texts, vocabulary, keep):
    """Token ids written by hand: lower-case, strip punctuation, split; ids from the vocabulary."""
    index = {word: i for i, word in enumerate(vocabulary)}
    rows = []
    for text in texts:
        words = "".join(c for c in text.lower() if c.isalnum() or c.isspace()).split()
        ids = [index.get(w, 1) for w in words]
        ids = ids[:LENGTH] if keep == "first" else ids[-LENGTH:]
        rows.append(ids + [0] * (LENGTH - len(ids)))
    return np.array(rows, np.int32)


def test_pre_keeps_the_last_tokens_and_post_the_first(data_dir):  # noqa: F811
    texts = load_imdb_text(validation_size=10).test[0]
    post = load_imdb("sequence", validation_size=10, sequence_length=LENGTH)
    pre = load_imdb("sequence", validation_size=10, sequence_length=LENGTH, truncating="pre")
    vocabulary = post.vectorizer.get_vocabulary()
    assert vocabulary == pre.vectorizer.get_vocabulary()  # same vocabulary: only the kept window differs
    np.testing.assert_array_equal(post.test[0], _expected(texts, vocabulary, "first"))
    np.testing.assert_array_equal(pre.test[0], _expected(texts, vocabulary, "last"))
    lengths = np.array([len(t.split()) for t in texts])
    long = lengths > LENGTH
    assert long.any() and (~long).any()
    # Short reviews are identical; long ones differ (the fixture's long reviews end with "long long ...").
    np.testing.assert_array_equal(pre.test[0][~long], post.test[0][~long])
    assert not np.array_equal(pre.test[0][long], post.test[0][long])
    long_id = vocabulary.index("long")
    assert np.all(pre.test[0][long] == long_id)  # the last 12 tokens of a long fixture review are all "long"
    # Padding stays at the end, and the mask counts min(length, LENGTH) real tokens either way.
    mask = padding_mask(pre.test[0])
    assert np.all(np.diff(mask.astype(int), axis=1) <= 0)
    np.testing.assert_array_equal(mask.sum(axis=1), padding_mask(post.test[0]).sum(axis=1))
    for (xa, ya), (xb, yb) in zip(pre[:3], post[:3]):
        assert xa.shape == xb.shape and xa.dtype == np.int32
        np.testing.assert_array_equal(ya, yb)


def test_pre_as_dataset(data_dir):  # noqa: F811
    pre = load_imdb("sequence", validation_size=10, sequence_length=LENGTH, truncating="pre")
    ds = load_imdb(
        "sequence", validation_size=10, sequence_length=LENGTH, truncating="pre", as_dataset=True, batch_size=8
    )
    xb, _ = next(iter(ds.test))
    np.testing.assert_array_equal(xb.numpy(), pre.test[0][:8])


def test_bad_truncating_names_the_argument(data_dir):  # noqa: F811
    with pytest.raises(ValueError, match=r"`truncating` must be one of \('post', 'pre'\); received truncating='end'"):
        load_imdb("sequence", truncating="end")
