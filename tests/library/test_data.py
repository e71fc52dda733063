"""Tests of `moe_tf.data`: sources (data folder, verified cache, tfds, offline), splits, views, CLI.

No test touches the network: an autouse fixture makes every socket connection fail (and
records the attempt). The real-data test at the end runs only when MOE_TF_DATA_DIR is set.
"""

import gzip
import json
import math
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from moe_tf.data import (
    DataUnavailableError,
    ImdbData,
    Splits,
    _common,
    _sources,
    load_imdb,
    load_imdb_text,
    load_mnist,
    padding_mask,
    resolve_data_dir,
)
from moe_tf.data import __main__ as cli

REAL_DATA_DIR = os.environ.get("MOE_TF_DATA_DIR")  # read before the fixtures below clear it

N_TRAIN, N_TEST = 120, 40  # fixture MNIST
IMDB_TRAIN, IMDB_TEST = 60, 30  # fixture IMDB
POS_WORDS = ["great", "wonderful", "superb", "moving"]
NEG_WORDS = ["awful", "boring", "dreadful", "clumsy"]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No data folder, a private empty cache, and a network that refuses every connection."""
    monkeypatch.delenv("MOE_TF_DATA_DIR", raising=False)
    monkeypatch.setenv("MOE_TF_CACHE_DIR", str(tmp_path / "cache"))
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network blocked by tests/library/test_data.py")

    monkeypatch.setattr(socket.socket, "connect", lambda self, *a: refuse(*a))
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def mnist_arrays(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(N_TRAIN + N_TEST, 28, 28), dtype=np.uint8)  # all distinct images
    y = (np.arange(N_TRAIN + N_TEST) % 10).astype(np.uint8)
    return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]


def write_mnist(folder):
    x_train, y_train, x_test, y_test = mnist_arrays()
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "mnist.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def imdb_records(split):
    """Reviews with one unique word each (`train7`, `test3`) plus sentiment words and `<br />` tags."""
    n = IMDB_TRAIN if split == "train" else IMDB_TEST
    records = []
    for i in range(n):
        label = i % 2
        words = POS_WORDS if label else NEG_WORDS
        text = f"{split}{i} film was {words[i % 4]}<br />{words[(i + 1) % 4]} film<br/>end"
        if split == "test":
            text += " testonlyword"
        if i % 3 == 0:
            text += " " + " ".join(["long"] * 20)  # a few long reviews, for truncation in the sequence view
        records.append((text, label))
    return records


def write_imdb(folder):
    for split in ("train", "test"):
        _sources.write_jsonl_gz(folder / "imdb" / f"{split}.jsonl.gz", imdb_records(split))


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A MOE_TF_DATA_DIR-layout folder with the fixture files, set in the environment."""
    folder = tmp_path / "data"
    write_mnist(folder)
    write_imdb(folder)
    monkeypatch.setenv("MOE_TF_DATA_DIR", str(folder))
    return folder


def fill_cache(folder):
    write_mnist(folder)
    write_imdb(folder)
    for name in ("mnist.npz", "imdb/train.jsonl.gz", "imdb/test.jsonl.gz"):
        _sources.write_sidecar(folder / name)


@pytest.fixture
def fetch_calls(monkeypatch):
    """Replaces the real fetchers by fixture writers; returns the list of calls made."""
    calls = []

    def fake_mnist(folder):
        calls.append("mnist")
        write_mnist(Path(folder))

    def fake_imdb(folder):
        calls.append("imdb")
        write_imdb(Path(folder))

    monkeypatch.setattr(_sources, "fetch_mnist", fake_mnist)
    monkeypatch.setattr(_sources, "fetch_imdb", fake_imdb)
    return calls


def rows(x):
    return {row.tobytes() for row in np.asarray(x).reshape(len(x), -1)}


# --------------------------------------------------------------------------- folders


def test_resolve_data_dir_prefers_argument_then_environment(monkeypatch, tmp_path):
    assert resolve_data_dir() is None
    monkeypatch.setenv("MOE_TF_DATA_DIR", "")
    assert resolve_data_dir() is None
    monkeypatch.setenv("MOE_TF_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir(str(tmp_path / "arg")) == tmp_path / "arg"


def test_cache_dir_follows_keras_home_unless_overridden(monkeypatch, tmp_path):
    monkeypatch.delenv("MOE_TF_CACHE_DIR")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert _sources.cache_dir() == tmp_path / "kh" / "datasets" / "moe_tf"
    monkeypatch.setenv("MOE_TF_CACHE_DIR", str(tmp_path / "c"))
    assert _sources.cache_dir() == tmp_path / "c"


# --------------------------------------------------------------------------- splits


def test_split_indices_properties():
    train, val, test = _common.split_indices(100, 30, validation_size=20, seed=3)
    assert len(val) == 20 and len(train) == 80 and np.array_equal(test, np.arange(30))
    assert not set(train) & set(val) and set(train) | set(val) == set(range(100))
    again = _common.split_indices(100, 30, validation_size=20, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))
    other = _common.split_indices(100, 30, validation_size=20, seed=4)
    assert not np.array_equal(val, other[1])
    sub_train, sub_val, sub_test = _common.split_indices(
        100, 30, validation_size=20, train_size=10, test_size=7, seed=3
    )
    assert np.array_equal(sub_val, val)  # subsets never change the validation set
    assert len(sub_train) == 10 and set(sub_train) <= set(train)
    assert len(sub_test) == 7 and len(set(sub_test)) == 7 and np.all(np.diff(sub_test) > 0)
    assert not np.array_equal(sub_test, _common.split_indices(100, 30, validation_size=20, test_size=7, seed=4)[2])


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"validation_size": 100}, "validation_size"),
        ({"validation_size": -1}, "validation_size"),
        ({"validation_size": 2.5}, "validation_size"),
        ({"validation_size": 10, "train_size": 91}, "train_size"),
        ({"validation_size": 10, "train_size": 0}, "train_size"),
        ({"validation_size": 10, "test_size": 31}, "test_size"),
        ({"validation_size": 10, "seed": "a"}, "seed"),
    ],
)
def test_split_indices_rejects_bad_sizes(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`.*received {name}="):
        _common.split_indices(100, 30, **kwargs)


# --------------------------------------------------------------------------- MNIST


def test_load_mnist_from_data_dir(data_dir):
    splits = load_mnist(validation_size=20)
    assert isinstance(splits, Splits)
    (x_train, y_train), (x_val, y_val), (x_test, _y_test) = splits
    assert x_train.shape == (100, 784) and x_val.shape == (20, 784) and x_test.shape == (40, 784)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0 and x_train.max() > 0.99
    raw_train, raw_y, raw_test, _ = mnist_arrays()
    # By content: val and train come from the official train split, never from test, and do not overlap.
    as_uint8 = lambda x: np.rint(x * 255).astype(np.uint8)
    assert rows(as_uint8(x_val)).isdisjoint(rows(raw_test)) and rows(as_uint8(x_val)) <= rows(raw_train)
    assert rows(as_uint8(x_train)).isdisjoint(rows(as_uint8(x_val)))
    assert rows(as_uint8(x_train)) | rows(as_uint8(x_val)) == rows(raw_train)
    assert np.array_equal(as_uint8(x_test).reshape(-1, 28, 28), raw_test)  # test: all of it, in order
    # Labels travel with their images.
    lookup = {img.tobytes(): label for img, label in zip(raw_train.reshape(N_TRAIN, -1), raw_y)}
    assert [lookup[r.tobytes()] for r in as_uint8(x_val)] == list(y_val)


def test_load_mnist_seed_subsets_and_shape(data_dir):
    a = load_mnist(validation_size=20, seed=1)
    b = load_mnist(validation_size=20, seed=1)
    c = load_mnist(validation_size=20, seed=2)
    assert np.array_equal(a.val[0], b.val[0]) and not np.array_equal(a.val[0], c.val[0])
    small = load_mnist(validation_size=20, train_size=30, test_size=10, seed=1, flatten=False, data_dir=data_dir)
    assert small.train[0].shape == (30, 28, 28) and small.test[0].shape == (10, 28, 28)
    assert np.array_equal(small.val[0].reshape(20, -1), a.val[0])
    assert rows(small.train[0]) <= rows(a.train[0])


def test_load_mnist_as_dataset(data_dir):
    arrays = load_mnist(validation_size=20, seed=5)
    ds = load_mnist(validation_size=20, seed=5, as_dataset=True, batch_size=32)
    epoch1 = [x.numpy() for x, _ in ds.train]
    epoch2 = [x.numpy() for x, _ in ds.train]
    assert [len(b) for b in epoch1] == [32, 32, 32, 4]
    assert rows(np.concatenate(epoch1)) == rows(arrays.train[0])  # every training image, once
    assert not np.array_equal(np.concatenate(epoch1), arrays.train[0])  # shuffled...
    assert not np.array_equal(np.concatenate(epoch1), np.concatenate(epoch2))  # ...anew each epoch
    val_x = np.concatenate([x.numpy() for x, _ in ds.val])
    test_y = np.concatenate([y.numpy() for _, y in ds.test])
    assert np.array_equal(val_x, arrays.val[0]) and np.array_equal(test_y, arrays.test[1])  # in order


def test_bad_arguments_name_the_argument(data_dir):
    with pytest.raises(ValueError, match="`batch_size`.*batch_size=0"):
        load_mnist(as_dataset=True, batch_size=0)
    with pytest.raises(ValueError, match="`view`.*'ngrams', 'sequence'.*view='bag'"):
        load_imdb("bag")
    with pytest.raises(ValueError, match="`max_tokens`"):
        load_imdb("sequence", max_tokens=-5)


# --------------------------------------------------------------------------- IMDB


def test_load_imdb_text_splits_and_cleaning(data_dir):
    (x_train, y_train), (x_val, y_val), (x_test, _y_test) = load_imdb_text(validation_size=10)
    assert (len(x_train), len(x_val), len(x_test)) == (50, 10, 30)
    assert y_train.dtype == np.int64 and set(y_train) == {0, 1}
    assert isinstance(x_train[0], str)
    everything = list(x_train) + list(x_val) + list(x_test)
    assert not any("<br" in text for text in everything)
    # `<br />` became exactly one space; nothing else changed.
    expected = {t.replace("<br />", " ").replace("<br/>", " ") for t, _ in imdb_records("train")}
    assert set(x_train) | set(x_val) == expected
    assert set(x_val).isdisjoint(x_train) and set(x_val).isdisjoint(x_test)
    assert all(t.startswith("test") for t in x_test)
    # Labels travel with their texts.
    label_of = {t.replace("<br />", " ").replace("<br/>", " "): y for t, y in imdb_records("train")}
    assert [label_of[t] for t in x_val] == list(y_val)


def test_clean_text_variants():
    from moe_tf.data._imdb import clean_text

    assert clean_text("a<br />b<br/>c<br>d<BR />e") == "a b c d e"
    assert clean_text("keep <b>this</b>  and  spaces") == "keep <b>this</b>  and  spaces"


def test_sequence_view_vectorizer_sees_train_only(data_dir):
    data = load_imdb("sequence", validation_size=10, sequence_length=12, max_tokens=1000)
    assert isinstance(data, ImdbData)
    (x_train, _), (x_val, _), (x_test, _) = data.train, data.val, data.test
    assert x_train.shape == (50, 12) and x_test.shape == (30, 12) and x_train.dtype == np.int32
    vocab = set(data.vectorizer.get_vocabulary())
    assert data.vocabulary_size == len(vocab) < 1000
    text = load_imdb_text(validation_size=10)
    train_ids = {t.split()[0] for t in text.train[0]}
    val_ids = {t.split()[0] for t in text.val[0]}
    assert train_ids <= vocab
    assert not val_ids & vocab and "testonlyword" not in vocab  # adapted on train only
    ids = np.asarray(data.vectorizer(["testonlyword " + min(val_ids) + " " + min(train_ids)]))[0]
    assert list(ids[:2]) == [1, 1] and ids[2] > 1  # 1 = out of vocabulary
    assert np.all(x_val[:, 0] == 1)  # every validation review starts with its own (unseen) id word


def test_sequence_view_padding_and_mask(data_dir):
    data = load_imdb("sequence", validation_size=10, sequence_length=12)
    x = data.test[0]
    lengths = np.array([len(t.split()) for t in load_imdb_text(validation_size=10).test[0]])
    assert lengths.min() < 12 < lengths.max()  # the fixture has short and long reviews
    mask = padding_mask(x)
    assert mask.dtype == bool and mask.shape == x.shape
    np.testing.assert_array_equal(mask.sum(axis=1), np.minimum(lengths, 12))
    assert np.all(x[~mask] == 0) and np.all(x[mask] > 0)
    assert np.all(np.diff(mask.astype(int), axis=1) <= 0)  # padding only at the end
    tensor_mask = padding_mask(tf.constant(x))
    assert tensor_mask.dtype == tf.bool and np.array_equal(np.asarray(tensor_mask), mask)
    ds = load_imdb("sequence", validation_size=10, sequence_length=12, as_dataset=True, batch_size=8)
    xb, yb = next(iter(ds.test))
    assert np.array_equal(xb.numpy(), x[:8]) and yb.dtype == tf.int64


def test_ngrams_view_is_train_fitted_tfidf(data_dir):
    data = load_imdb("ngrams", validation_size=10, normalize=False)
    x_train, x_test = data.train[0], data.test[0]
    assert isinstance(x_train, tf.SparseTensor) and x_train.dtype == tf.float32
    assert tuple(x_train.dense_shape.numpy()) == (50, data.vocabulary_size)
    assert tuple(x_test.dense_shape.numpy()) == (30, data.vocabulary_size)
    vocab = data.vectorizer.get_vocabulary()
    assert "great film" in vocab and "film was" in vocab  # bigrams
    assert "testonlyword" not in vocab
    # The sparse matrix equals the vectorizer's dense output.
    texts = load_imdb_text(validation_size=10)
    np.testing.assert_allclose(
        tf.sparse.to_dense(x_test).numpy(), np.asarray(data.vectorizer(texts.test[0])), rtol=1e-6
    )
    # tf-idf by hand: count * log(1 + N / (1 + document frequency)), N = training documents only.
    docs = [t.lower().split() for t in texts.train[0]]
    df = sum("film" in d for d in docs)
    idf = math.log(1 + len(docs) / (1 + df))
    dense_test = tf.sparse.to_dense(x_test).numpy()
    count = texts.test[0][0].lower().split().count("film")
    assert count == 2
    assert dense_test[0, vocab.index("film")] == pytest.approx(count * idf, rel=1e-5)
    assert dense_test[0, 0] > 0  # column 0 collects the out-of-vocabulary n-grams ("testonlyword", "test0")


def test_ngrams_view_normalized_and_batched(data_dir):
    data = load_imdb("ngrams", validation_size=10, max_tokens=50, ngrams=1)
    assert data.vocabulary_size == 50  # the fixture has more than 50 distinct words
    x_val = tf.sparse.to_dense(data.val[0]).numpy()
    np.testing.assert_allclose(np.linalg.norm(x_val, axis=1), 1.0, rtol=1e-5)
    raw = np.asarray(data.vectorizer(load_imdb_text(validation_size=10).val[0]))
    np.testing.assert_allclose(x_val, raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-5, atol=1e-7)
    assert not any(" " in token for token in data.vectorizer.get_vocabulary())  # ngrams=1: words only
    ds = load_imdb("ngrams", validation_size=10, max_tokens=50, ngrams=1, as_dataset=True, batch_size=16)
    val_batches = list(ds.val)
    assert [tuple(x.shape) for x, _ in val_batches] == [(10, data.vocabulary_size)]
    np.testing.assert_allclose(val_batches[0][0].numpy(), x_val, rtol=1e-6)
    train_x = [x.numpy() for x, _ in ds.train]
    assert [len(b) for b in train_x] == [16, 16, 16, 2]
    dense_train = tf.sparse.to_dense(data.train[0]).numpy()
    assert rows(np.concatenate(train_x)) == rows(dense_train)  # every training row once, shuffled
    assert not np.array_equal(np.concatenate(train_x), dense_train)


def test_ngrams_view_nb_weighting_uses_training_labels_only(data_dir):
    data = load_imdb("ngrams", validation_size=10, ngrams=1, weighting="nb", normalize=False)
    texts = load_imdb_text(validation_size=10)
    vocab = data.vectorizer.get_vocabulary()
    # r_j by hand for one word, from the training reviews' labels only (alpha = 1).
    word = "film"
    j = vocab.index(word)
    counts = np.asarray(data.vectorizer(texts.train[0])) > 0  # [N, V] presence
    y = texts.train[1]
    p = 1 + counts[y == 1].sum(axis=0)
    q = 1 + counts[y == 0].sum(axis=0)
    r = np.log((p / p.sum()) / (q / q.sum()))
    x_test = tf.sparse.to_dense(data.test[0]).numpy()
    present = np.asarray(data.vectorizer(texts.test[0])) > 0
    np.testing.assert_allclose(x_test[present], np.broadcast_to(r, x_test.shape)[present], rtol=1e-5)
    assert np.all(x_test[~present] == 0)  # absent n-grams stay 0 (binarised, not counts)
    assert x_test[0, j] == pytest.approx(r[j], rel=1e-5)
    # (r computed by hand from the training labels alone matches, so val/test labels play no part.)
    normed = load_imdb("ngrams", validation_size=10, ngrams=1, weighting="nb")
    np.testing.assert_allclose(np.linalg.norm(tf.sparse.to_dense(normed.val[0]).numpy(), axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="weighting"):
        load_imdb("ngrams", weighting="bm25")


# --------------------------------------------------------------------------- data folder errors


def test_data_dir_missing_file_names_it(data_dir):
    (data_dir / "imdb" / "test.jsonl.gz").unlink()
    with pytest.raises(DataUnavailableError, match=r"imdb/test\.jsonl\.gz is missing.*python -m moe_tf\.data download"):
        load_imdb_text()
    load_mnist(validation_size=20)  # the other dataset is still fine


def test_data_dir_truncated_gzip_is_reported(data_dir):
    path = data_dir / "imdb" / "train.jsonl.gz"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DataUnavailableError, match=r"train\.jsonl\.gz.*(EOFError|corrupt)"):
        load_imdb_text()
    assert path.exists()  # a data folder is never modified


def test_data_dir_sidecar_mismatch_is_reported(data_dir):
    _sources.write_sidecar(data_dir / "mnist.npz")
    load_mnist(validation_size=20)
    (data_dir / "mnist.npz.sha256").write_text("0" * 64 + "  mnist.npz\n")
    with pytest.raises(DataUnavailableError, match=r"mnist\.npz is corrupt: its sha256"):
        load_mnist()


def test_missing_data_dir_is_reported(tmp_path):
    with pytest.raises(DataUnavailableError, match="does not exist.*MOE_TF_DATA_DIR"):
        load_mnist(data_dir=tmp_path / "nowhere")


# --------------------------------------------------------------------------- cache


def test_cache_layout_is_used_and_verified_without_fetching(tmp_path, fetch_calls, isolated):
    cache = tmp_path / "cache"
    fill_cache(cache)
    assert load_mnist(validation_size=20).train[0].shape == (100, 784)
    assert len(load_imdb_text(validation_size=10).test[0]) == IMDB_TEST
    assert fetch_calls == [] and isolated == []


def test_empty_cache_is_filled_by_fetch_with_sidecars(tmp_path, fetch_calls):
    load_mnist(validation_size=20)
    load_imdb_text(validation_size=10)
    load_mnist(validation_size=20)
    assert fetch_calls == ["mnist", "imdb"]
    for name in ("mnist.npz", "imdb/train.jsonl.gz", "imdb/test.jsonl.gz"):
        path = tmp_path / "cache" / name
        digest, file_name = (path.parent / (path.name + ".sha256")).read_text().split()
        assert digest == _sources.sha256_of(path) and file_name == path.name


def test_corrupt_cache_file_is_refetched(tmp_path, fetch_calls):
    cache = tmp_path / "cache"
    fill_cache(cache)
    path = cache / "mnist.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: np.load may not notice, the hash does
    path.write_bytes(bytes(data))
    assert load_mnist(validation_size=20).test[0].shape == (40, 784)
    assert fetch_calls == ["mnist"]
    assert _sources.sha256_of(path) == _sources.read_sidecar(path)


def test_truncated_gzip_in_cache_is_refetched(tmp_path, fetch_calls):
    cache = tmp_path / "cache"
    fill_cache(cache)
    path = cache / "imdb" / "train.jsonl.gz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(EOFError), gzip.open(path, "rt") as f:  # what a reader without the check would hit
        f.read()
    assert len(load_imdb_text(validation_size=10).train[0]) == 50
    assert fetch_calls == ["imdb"]


def test_file_without_sidecar_is_refetched(tmp_path, fetch_calls):
    """A download killed before its sidecar was written never counts as valid."""
    cache = tmp_path / "cache"
    fill_cache(cache)
    (cache / "mnist.npz.sha256").unlink()
    load_mnist(validation_size=20)
    assert fetch_calls == ["mnist"]


def test_unreadable_file_despite_hash_is_refetched_once(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    calls = []

    def bad_fetch(folder):
        calls.append(1)
        (Path(folder) / "mnist.npz").write_bytes(b"not a zip")

    monkeypatch.setattr(_sources, "fetch_mnist", bad_fetch)
    with pytest.raises(DataUnavailableError, match="freshly fetched file is unreadable"):
        load_mnist()
    assert len(calls) == 2 and not (cache / "mnist.npz").exists()


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "f.bin"

    def killed(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _sources.atomic_write(target, killed)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- tfds and offline


def test_imdb_through_mocked_tfds_is_converted_into_the_cache(tmp_path, monkeypatch, isolated):
    import tensorflow_datasets as tfds

    monkeypatch.setattr(_sources, "reachable", lambda host, port, timeout=3.0: (True, ""))
    with tfds.testing.mock_data(num_examples=12):
        splits = load_imdb_text(validation_size=2)
    assert (len(splits.train[0]), len(splits.val[0]), len(splits.test[0])) == (10, 2, 12)
    assert all(isinstance(t, str) for t in splits.train[0]) and set(splits.test[1]) <= {0, 1}
    path = tmp_path / "cache" / "imdb" / "train.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    assert len(records) == 12 and set(records[0]) == {"text", "label"}
    assert _sources.read_sidecar(path) == _sources.sha256_of(path)
    assert isolated == []  # no connection was attempted


@pytest.mark.parametrize("loader", [load_mnist, load_imdb_text], ids=["mnist", "imdb"])
def test_offline_without_data_fails_fast_with_instructions(loader, isolated):
    start = time.monotonic()
    with pytest.raises(DataUnavailableError) as info:
        loader()
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "MOE_TF_DATA_DIR" in message and "python -m moe_tf.data download" in message
    assert "network blocked" in message
    assert isolated, "the reachability probe should have tried (and failed) to connect"


# --------------------------------------------------------------------------- CLI


def test_cli_download_writes_layout_and_prints_hashes(tmp_path, fetch_calls, capsys):
    target = tmp_path / "classroom"
    assert cli.main(["download", str(target)]) == 0
    out = capsys.readouterr().out
    for name in ("mnist.npz", "imdb/train.jsonl.gz", "imdb/test.jsonl.gz"):
        assert (target / name).is_file()
        assert name in out and _sources.sha256_of(target / name) in out
    assert f"{(target / 'mnist.npz').stat().st_size:,}" in out
    assert cli.main(["download", str(target)]) == 0  # already complete: nothing fetched again
    assert fetch_calls == ["mnist", "imdb"]
    # The folder works as MOE_TF_DATA_DIR.
    assert load_imdb_text(validation_size=10, data_dir=target).test[0].shape == (IMDB_TEST,)


def test_cli_info_reports_source_and_counts(data_dir, capsys):
    assert cli.main(["info", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert f"mnist: data_dir {data_dir} (train {N_TRAIN}, test {N_TEST})" in out
    assert f"imdb: data_dir {data_dir} (train {IMDB_TRAIN}, test {IMDB_TEST})" in out


def test_cli_offline_download_fails_with_message(tmp_path, capsys):
    assert cli.main(["download", str(tmp_path / "d"), "--only", "mnist"]) == 1
    assert "MOE_TF_DATA_DIR" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["fetch"], ["download", "a", "b"], ["download", "--only", "cifar"]])
def test_cli_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


# --------------------------------------------------------------------------- real data


@pytest.mark.skipif(
    not REAL_DATA_DIR,
    reason="set MOE_TF_DATA_DIR to a folder with the real datasets "
    "(python -m moe_tf.data download DIR) to run this test",
)
def test_real_datasets_counts_and_balance():
    (x_train, y_train), (x_val, y_val), (x_test, _y_test) = load_mnist(data_dir=REAL_DATA_DIR)
    assert (len(x_train), len(x_val), len(x_test)) == (55000, 5000, 10000)
    assert np.array_equal(
        np.bincount(np.concatenate([y_train, y_val]), minlength=10),
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
    )
    assert np.bincount(y_val, minlength=10).min() > 350  # every digit is in the validation set
    (t_train, l_train), (t_val, l_val), (t_test, l_test) = load_imdb_text(data_dir=REAL_DATA_DIR)
    assert (len(t_train), len(t_val), len(t_test)) == (22500, 2500, 25000)
    assert l_train.sum() + l_val.sum() == 12500 and l_test.sum() == 12500
    assert 0.45 < l_val.mean() < 0.55
    assert not any("<br />" in t for t in t_val)
