"""Course datasets, split the same way everywhere: MNIST and IMDB.

    load_mnist()             float32 pixels, 55,000 / 5,000 / 10,000 by default
    load_imdb_text()         raw review text, 22,500 / 2,500 / 25,000 by default
    load_imdb("ngrams")      tf-idf 1-2-gram bag (sparse), vectorizer adapted on train only
    load_imdb("sequence")    int token ids [N, 256], 0 = padding; see `padding_mask`

Validation sets are always carved out of the official training split with a seeded
permutation; the official test split is never used to choose anything.

Where the files come from, in order:

1. A data folder: the `data_dir` argument, else `$MOE_TF_DATA_DIR`. Layout: `mnist.npz`,
   `imdb/train.jsonl.gz`, `imdb/test.jsonl.gz`. Prepare one for an offline classroom with
   `python -m moe_tf.data download DIR`.
2. The download cache (`$MOE_TF_CACHE_DIR`, else `$KERAS_HOME/datasets/moe_tf`, else
   `~/.keras/datasets/moe_tf`): every file is checked against its `.sha256` sidecar on
   every load, and deleted and fetched again if it fails.
3. A download into the cache: MNIST through keras, IMDB through tensorflow_datasets.
   Offline, the loaders fail within seconds with `DataUnavailableError`.
"""

from moe_tf.data._common import DataUnavailableError, ImdbData, Splits
from moe_tf.data._imdb import load_imdb, load_imdb_text, padding_mask
from moe_tf.data._mnist import load_mnist
from moe_tf.data._sources import resolve_data_dir

__all__ = [
    "DataUnavailableError",
    "ImdbData",
    "Splits",
    "load_imdb",
    "load_imdb_text",
    "load_mnist",
    "padding_mask",
    "resolve_data_dir",
]
