"""Where the raw files come from: the data folder, the verified cache, or a download.

Layout (the same for a data folder, the cache, and `python -m moe_tf.data download DIR`)::

    mnist.npz                 keras layout: x_train, y_train, x_test, y_test (uint8)
    imdb/train.jsonl.gz       gzip JSON Lines: {"text": "...", "label": 0 or 1}
    imdb/test.jsonl.gz

Each file may have a sidecar `<file>.sha256` in `sha256sum` format (`<hex>  <name>`).
In the cache the sidecar is mandatory: a file without one, or whose hash does not
match (a killed download, a truncated gzip, a flipped bit), is deleted and fetched
again. In a data folder the sidecar is optional and the folder is never modified.
"""

import gzip
import hashlib
import json
import os
import socket
import tempfile
import threading
from pathlib import Path

import numpy as np

from moe_tf.data._common import DataUnavailableError

DATA_DIR_ENV = "MOE_TF_DATA_DIR"
CACHE_DIR_ENV = "MOE_TF_CACHE_DIR"
DOWNLOAD_COMMAND = "python -m moe_tf.data download DIR"

MNIST_FILE = "mnist.npz"
IMDB_FILES = ("imdb/train.jsonl.gz", "imdb/test.jsonl.gz")
GROUPS = {"mnist": (MNIST_FILE,), "imdb": IMDB_FILES}

# keras.datasets.mnist.load_data() downloads this file and checks this hash.
MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
MNIST_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
MNIST_HOST = ("storage.googleapis.com", 443)
# tensorflow_datasets' imdb_reviews downloads http://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz
IMDB_TFDS_NAME = "imdb_reviews/plain_text"
IMDB_HOST = ("ai.stanford.edu", 80)

PROBE_TIMEOUT_S = 3.0


# --------------------------------------------------------------------------- folders


def resolve_data_dir(data_dir=None):
    """The offline data folder to read from, if any.

    Args:
        data_dir: a folder (str or Path). When None, `$MOE_TF_DATA_DIR` is used.

    Returns:
        The folder as an absolute `Path`, or None when neither is set (the loaders
        then use the download cache).

    Example::

        resolve_data_dir("/media/usb/moe_tf_data")  # PosixPath('/media/usb/moe_tf_data')
    """
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or None
    if data_dir is None:
        return None
    if not isinstance(data_dir, (str, os.PathLike)) or not str(data_dir):
        raise ValueError(
            f"`data_dir` must be a folder path (str or os.PathLike) or None; received data_dir={data_dir!r}."
        )
    return Path(data_dir).expanduser().absolute()


def cache_dir():
    """The download cache: `$MOE_TF_CACHE_DIR`, else `$KERAS_HOME/datasets/moe_tf`, else `~/.keras/datasets/moe_tf`."""
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser().absolute()
    keras_home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(keras_home).expanduser().absolute() / "datasets" / "moe_tf"


# --------------------------------------------------------------------------- hashing, atomic writes


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sidecar(path):
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def atomic_write(path, write):
    """Calls `write(file_object)` on a temporary file next to `path`, then renames it into place.

    A crash or a kill leaves at most a `*.tmp-*` file, never a partial `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_sidecar(path):
    """Writes `<path>.sha256` (sha256sum format) atomically; returns the hash."""
    digest = sha256_of(path)
    atomic_write(sidecar(path), lambda f: f.write(f"{digest}  {Path(path).name}\n".encode()))
    return digest


def read_sidecar(path):
    """The hash recorded next to `path`, or None if there is no readable sidecar."""
    try:
        text = sidecar(path).read_text().split()
    except (OSError, UnicodeDecodeError):
        return None
    return text[0].lower() if text and len(text[0]) == 64 else None


def write_jsonl_gz(path, records):
    """Writes `(text, label)` records as gzip JSON Lines, atomically and reproducibly (gzip mtime 0)."""

    def write(raw):
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            for text, label in records:
                gz.write((json.dumps({"text": text, "label": int(label)}, ensure_ascii=False) + "\n").encode("utf-8"))

    atomic_write(path, write)


# --------------------------------------------------------------------------- readers


class CorruptFile(Exception):
    """A file exists but cannot be parsed (internal; turned into DataUnavailableError or a re-fetch)."""


def read_mnist(path):
    """`(x_train, y_train, x_test, y_test)` uint8 arrays from a keras-layout `mnist.npz`."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = [np.asarray(f[k]) for k in ("x_train", "y_train", "x_test", "y_test")]
    except Exception as err:  # BadZipFile, EOFError, KeyError, ValueError, OSError...
        raise CorruptFile(f"cannot read {path}: {type(err).__name__}: {err}") from err
    x_train, y_train, x_test, y_test = arrays
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.ndim != 3 or x.shape[1:] != (28, 28) or y.shape != (x.shape[0],):
            raise CorruptFile(f"{path}: x_{name} {x.shape} / y_{name} {y.shape} are not [N, 28, 28] / [N]")
        if y.size and (y.min() < 0 or y.max() > 9):
            raise CorruptFile(f"{path}: y_{name} holds labels outside 0..9")
    return x_train, y_train, x_test, y_test


def read_jsonl_gz(path):
    """`(texts, labels)` from a gzip JSON Lines file: a list of str and an int64 array of 0/1."""
    texts, labels = [], []
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                record = json.loads(line)
                text, label = record["text"], record["label"]
                if not isinstance(text, str) or label not in (0, 1) or isinstance(label, bool):
                    raise ValueError(f"line {line_no}: expected a str text and a 0/1 label, got {record!r:.100}")
                texts.append(text)
                labels.append(label)
    except Exception as err:  # EOFError (truncated), BadGzipFile, JSONDecodeError, KeyError, UnicodeDecodeError...
        raise CorruptFile(f"cannot read {path}: {type(err).__name__}: {err}") from err
    if not texts:
        raise CorruptFile(f"{path} holds no reviews")
    return texts, np.asarray(labels, dtype=np.int64)


READERS = {
    "mnist": lambda folder: read_mnist(folder / MNIST_FILE),
    "imdb": lambda folder: tuple(read_jsonl_gz(folder / name) for name in IMDB_FILES),
}


# --------------------------------------------------------------------------- network and fetchers


def offline_message(what, folder, reason):
    return (
        f"{what} is not available: no data folder is set (data_dir argument or ${DATA_DIR_ENV}), the cache "
        f"{folder} does not hold it, and it could not be downloaded ({reason}). To work offline, prepare a "
        f"folder on a machine with internet access with `{DOWNLOAD_COMMAND}` (or copy one that holds mnist.npz "
        f"and imdb/train.jsonl.gz, imdb/test.jsonl.gz), then set {DATA_DIR_ENV}=DIR or pass data_dir=DIR."
    )


def reachable(host, port, timeout=PROBE_TIMEOUT_S):
    """Whether a TCP connection to `host:port` opens within `timeout` seconds (DNS included).

    Returns:
        `(ok, reason)`; reason is a short string when not ok.
    """
    result = {}

    def probe():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result["ok"] = True
        except Exception as err:  # noqa: BLE001 - OSError, gaierror, or whatever a test patched in
            result["error"] = err

    thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo itself has no timeout
    thread.start()
    thread.join(timeout + 0.5)
    if result.get("ok"):
        return True, ""
    err = result.get("error")
    return False, f"{host}:{port} unreachable: " + (
        f"{type(err).__name__}: {err}" if err else f"no answer in {timeout:g} s"
    )


def require_network(what, host, port, folder):
    ok, reason = reachable(host, port)
    if not ok:
        raise DataUnavailableError(offline_message(what, folder, reason))


def fetch_mnist(folder):
    """Downloads `mnist.npz` into `folder` through keras (which checks its sha256), atomically."""
    import keras

    folder = Path(folder)
    require_network("MNIST", *MNIST_HOST, folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
        try:
            path = keras.utils.get_file(
                fname=MNIST_FILE, origin=MNIST_URL, file_hash=MNIST_SHA256, cache_dir=tmp, cache_subdir=tmp
            )
        except Exception as err:
            raise DataUnavailableError(offline_message("MNIST", folder, f"{type(err).__name__}: {err}")) from err
        os.replace(path, folder / MNIST_FILE)


def _tfds_prepared(builder):
    import tensorflow as tf

    return tf.io.gfile.exists(os.path.join(str(builder.data_dir), "dataset_info.json"))


def fetch_imdb(folder):
    """Gets IMDB through `tensorflow_datasets` (`imdb_reviews/plain_text`) and converts it once into
    `imdb/train.jsonl.gz` and `imdb/test.jsonl.gz` under `folder`.

    tfds keeps its own copy (download + prepared records, about 200 MB) in its data folder
    (`$TFDS_DATA_DIR`, default `~/tensorflow_datasets`); a copy prepared earlier is reused offline.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:  # tfds comes with the course's extra, not with the library
        raise DataUnavailableError(
            "IMDB is downloaded through tensorflow_datasets, which is not installed: pip install "
            "'moe-tf[course]' (or tensorflow-datasets), or set MOE_TF_DATA_DIR to a folder that holds "
            "imdb/train.jsonl.gz and imdb/test.jsonl.gz."
        ) from err

    folder = Path(folder)
    builder = tfds.builder(IMDB_TFDS_NAME)
    if not _tfds_prepared(builder):
        require_network("IMDB", *IMDB_HOST, folder)
        try:
            builder.download_and_prepare()
        except Exception as err:
            raise DataUnavailableError(offline_message("IMDB", folder, f"{type(err).__name__}: {err}")) from err
    for name, split in zip(IMDB_FILES, ("train", "test")):
        examples = tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))
        records = ((ex["text"].decode("utf-8"), int(ex["label"])) for ex in examples)
        write_jsonl_gz(folder / name, records)


def _fetch(group, folder):
    # Looked up at call time so tests can monkeypatch `fetch_mnist` / `fetch_imdb`.
    {"mnist": fetch_mnist, "imdb": fetch_imdb}[group](folder)


# --------------------------------------------------------------------------- locating a dataset


def _unavailable_in_data_dir(folder, problem):
    return DataUnavailableError(
        f"{problem} The data folder {folder} comes from the data_dir argument or ${DATA_DIR_ENV}. It must hold "
        f"mnist.npz and imdb/train.jsonl.gz, imdb/test.jsonl.gz: create one with `{DOWNLOAD_COMMAND}` "
        f"(on a machine with internet access), or unset {DATA_DIR_ENV} to use the download cache."
    )


def _verified(path):
    expected = read_sidecar(path)
    return path.is_file() and expected is not None and sha256_of(path) == expected


def _remove(path):
    for p in (path, sidecar(path)):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def source_of(group, data_dir=None):
    """Where `group` ("mnist" or "imdb") would be read from, without reading or fetching.

    Returns:
        `(kind, folder)` with kind "data_dir", "cache" (verified files present) or "download".
    """
    folder = resolve_data_dir(data_dir)
    if folder is not None:
        return "data_dir", folder
    folder = cache_dir()
    if all(_verified(folder / name) for name in GROUPS[group]):
        return "cache", folder
    return "download", folder


def load_group(group, data_dir=None):
    """Reads the raw arrays of `group` ("mnist" or "imdb") from the first source that has them.

    1. The data folder (data_dir argument or `$MOE_TF_DATA_DIR`): read as is; a missing or
       unreadable file, or a hash that does not match its sidecar, raises DataUnavailableError.
    2. The cache: every file is re-verified against its sidecar on every load; a file that
       fails is deleted and fetched again (once).
    3. A download into the cache (needs the network; fails fast with DataUnavailableError).
    """
    folder = resolve_data_dir(data_dir)
    if folder is not None:
        if not folder.is_dir():
            raise _unavailable_in_data_dir(folder, f"The data folder {folder} does not exist.")
        for name in GROUPS[group]:
            path = folder / name
            if not path.is_file():
                raise _unavailable_in_data_dir(folder, f"{path} is missing.")
            expected = read_sidecar(path)
            if expected is not None and sha256_of(path) != expected:
                raise _unavailable_in_data_dir(
                    folder, f"{path} is corrupt: its sha256 does not match {sidecar(path).name}."
                )
        try:
            return READERS[group](folder)
        except CorruptFile as err:
            raise _unavailable_in_data_dir(folder, f"{err}; the file is corrupt or truncated.") from err

    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataUnavailableError(
            f"Cannot create the data cache {folder} ({err}). Set ${CACHE_DIR_ENV} to a writable folder, or "
            f"${DATA_DIR_ENV} to a folder prepared with `{DOWNLOAD_COMMAND}`."
        ) from err
    for attempt in range(2):
        paths = [folder / name for name in GROUPS[group]]
        if not all(_verified(p) for p in paths):
            for p in paths:
                _remove(p)
            _fetch(group, folder)
            missing = [str(p) for p in paths if not p.is_file()]
            if missing:
                raise DataUnavailableError(f"Fetching {group} did not produce {', '.join(missing)}.")
            for p in paths:
                write_sidecar(p)
        try:
            return READERS[group](folder)
        except CorruptFile as err:
            for p in paths:
                _remove(p)
            if attempt == 1:
                raise DataUnavailableError(
                    f"{err}: the freshly fetched file is unreadable too. Try again later, or set ${DATA_DIR_ENV} "
                    f"to a folder prepared with `{DOWNLOAD_COMMAND}`."
                ) from err
    raise AssertionError("unreachable")


def download(folder, groups=("mnist", "imdb")):
    """Fills `folder` with the files of `groups` (plus `.sha256` sidecars), fetching only what is missing
    or fails its check. Returns `[(relative_name, bytes, sha256)]`."""
    folder = Path(folder).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    report = []
    for group in groups:
        paths = [folder / name for name in GROUPS[group]]
        if not all(_verified(p) for p in paths):
            for p in paths:
                _remove(p)
            _fetch(group, folder)
            for p in paths:
                write_sidecar(p)
        READERS[group](folder)  # parse check; raises CorruptFile
        report += [(name, (folder / name).stat().st_size, read_sidecar(folder / name)) for name in GROUPS[group]]
    return report
