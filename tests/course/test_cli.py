"""`python -m moe_tf train`: argument errors, an end-to-end run on generated data, missing data;
every CLI's first line is its own (no TensorFlow start-up log lines).

The loaders of `moe_tf.data` are replaced by generated arrays: these tests never
touch the network or the real datasets.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import moe_tf.data
from moe_tf import __main__ as cli
from moe_tf.course.train import TABLE_COLUMNS, main
from moe_tf.data import DataUnavailableError, ImdbData, Splits


def _refuse(*args, **kwargs):
    raise AssertionError("data was loaded although the arguments are invalid")


@pytest.fixture
def no_data(monkeypatch):
    monkeypatch.setattr(moe_tf.data, "load_mnist", _refuse)
    monkeypatch.setattr(moe_tf.data, "load_imdb", _refuse)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--task", "cifar10"], ["--task", "'cifar10'", "mnist", "imdb"]),
        (["--model", "dense", "transformer"], ["--model", "'transformer'", "topk-moe", "switch"]),
        (["--model", "topk-moe", "--experts", "4", "--k", "5"], ["--k", "5", "--experts (4)"]),
        (["--k", "0"], ["--k", "0"]),
        (["--epochs", "-3"], ["--epochs", "-3", "positive"]),
        (["--epochs", "0"], ["--epochs", "0"]),
        (["--capacity-factor", "0"], ["--capacity-factor", "'0'", "> 0"]),
        (["--capacity-factor", "-1.5"], ["--capacity-factor", "'-1.5'"]),
        (["--train-size", "0"], ["--train-size", "0"]),
        (["--train-size", "56000"], ["--train-size", "55000", "56000"]),
        (["--test-size", "10001"], ["--test-size", "10000", "10001"]),
        (["--task", "imdb", "--val-size", "25000"], ["--val-size", "25000"]),
        (["--batch-size", "0"], ["--batch-size", "0"]),
        (["--dropout", "1"], ["--dropout", "1.0"]),
    ],
)
def test_argument_errors_exit_2_before_loading(argv, expected, capsys, no_data):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "error:" in err
    for text in expected:
        assert text in err


def test_k_is_only_checked_against_experts_for_topk(capsys, no_data):
    # --experts 1 with the default --k 2 is fine when no top-k model runs: data loading is reached.
    with pytest.raises(AssertionError, match="data was loaded"):
        main(["--model", "switch", "--experts", "1"])


def test_subprocess_bad_argument():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-m", "moe_tf", "train", "--model", "topk-moe", "--experts", "2", "--k", "3"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert "argument --k: must satisfy 1 <= k <= --experts (2) for topk-moe; received --k 3" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_command_dispatch(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([])
    assert exc.value.code == 2 and "a command is required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["fit"])
    assert exc.value.code == 2 and "unknown command 'fit' (choose from train)" in capsys.readouterr().err
    assert cli.main(["--help"]) == 0 and "train" in capsys.readouterr().out


# -- end to end on generated data -------------------------------------------------


def _blobs(n, dim, classes, seed):
    """Linearly separable-ish clusters: the models must learn something in two epochs."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(classes, dim)).astype("float32") * 3
    y = rng.integers(0, classes, size=n)
    x = centres[y] + rng.normal(size=(n, dim)).astype("float32")
    return x.astype("float32"), y.astype("int64")


@pytest.fixture
def fake_mnist(monkeypatch):
    calls = []

    def load_mnist(*, validation_size=5000, train_size=None, test_size=None, seed=0, flatten=True, **kwargs):
        calls.append(dict(validation_size=validation_size, train_size=train_size, test_size=test_size, seed=seed))
        return Splits(_blobs(train_size, 12, 10, 1), _blobs(validation_size, 12, 10, 2), _blobs(test_size, 12, 10, 3))

    monkeypatch.setattr(moe_tf.data, "load_mnist", load_mnist)
    return calls


SMALL = [
    "--lr",
    "0.01",
    "--width",
    "16",
    "--expert-units",
    "8",
    "--experts",
    "4",
    "--batch-size",
    "32",
    "--no-jit",
    "--verbose",
    "0",
]


def test_end_to_end_all_models(tmp_path, capsys, fake_mnist):
    argv = [
        "--task",
        "mnist",
        "--model",
        "all",
        "--epochs",
        "2",
        "--train-size",
        "256",
        "--val-size",
        "64",
        "--test-size",
        "96",
        "--seed",
        "3",
        "--out",
        str(tmp_path),
        "--name",
        "e2e",
        *SMALL,
    ]
    assert main(argv) == 0
    assert fake_mnist == [dict(validation_size=64, train_size=256, test_size=96, seed=3)]
    out = capsys.readouterr().out

    # The table: a header with every column, one row per model, "—" for dense's drops.
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("model"))
    for column in TABLE_COLUMNS:
        assert column in lines[header]
    rows = {line.split()[0]: line for line in lines[header + 2 : header + 6]}
    assert list(rows) == ["dense", "dense-moe", "topk-moe", "switch"]
    assert rows["dense"].rstrip().endswith("—")
    assert all(rows[m].rstrip().endswith("%") for m in ("dense-moe", "topk-moe", "switch"))
    assert "2 x multiply-adds" in out

    run = tmp_path / "mnist-e2e"
    results = json.loads((run / "results.json").read_text())
    assert results["args"]["epochs"] == 2 and results["args"]["model"] == ["dense", "dense-moe", "topk-moe", "switch"]
    assert results["args"]["experts"] == 4 and results["args"]["k"] == 2
    assert set(results["versions"]) >= {"moe_tf", "tensorflow", "keras", "numpy", "python"}
    by_model = {r["model"]: r for r in results["results"]}
    for name, r in by_model.items():
        assert 0.0 <= r["test_accuracy"] <= 1.0 and r["train_time_s"] > 0
        assert r["total_params"] >= r["active_params"] > 0 and r["active_flops"] > 0
        assert len(r["history"]["loss"]) == len(r["history"]["val_accuracy"]) == 2
        assert f"{100 * r['test_accuracy']:.2f}%" in rows[name]
        assert f"{r['total_params']:,}" in rows[name] and f"{r['active_flops']:,}" in rows[name]
        # step time: median of the 2 x 8 - 1 steps after the first (compilation), well under the whole fit
        assert 0 < r["step_ms"] < 1e3 * r["train_time_s"] / 8, f"{name}: step time {r['step_ms']} ms"
        assert f"{r['step_ms']:.1f} ms" in rows[name]
    assert by_model["dense"]["test_dropped"] is None and by_model["dense"]["expert_load"] == {}
    assert by_model["dense-moe"]["test_dropped"] == 0.0
    assert by_model["topk-moe"]["active_params"] < by_model["dense-moe"]["active_params"]
    for name in ("dense-moe", "topk-moe", "switch"):
        r = by_model[name]
        assert 0.0 <= r["test_dropped"] <= 1.0
        assert len(r["history"]["moe_dropped"]) == 2
        load = np.array(r["expert_load"]["moe"]["train"])
        assert load.shape == (2, 4)
        np.testing.assert_allclose(load.sum(axis=1), 1.0, rtol=1e-5)
        assert np.array(r["expert_load"]["moe"]["val"]).shape == (2, 4)
    assert by_model["dense-moe"]["test_accuracy"] > 0.5  # separable blobs: it learned

    for png in ("curves.png", "expert_load.png"):
        path = run / png
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
        assert str(path) in out
    assert str(run / "results.json") in out


def test_imdb_task_trains_on_generated_ngrams(tmp_path, capsys, monkeypatch):
    import tensorflow as tf

    vocab = 40
    seen = {}

    def dataset(n, seed, batch_size):
        x, y = _blobs(n, vocab, 2, seed)
        return tf.data.Dataset.from_tensor_slices((np.abs(x), y)).batch(batch_size)

    def load_imdb(
        view="ngrams",
        *,
        validation_size=2500,
        train_size=None,
        test_size=None,
        max_tokens=None,
        batch_size=64,
        as_dataset=False,
        **kwargs,
    ):
        seen.update(
            view=view,
            max_tokens=max_tokens,
            as_dataset=as_dataset,
            batch_size=batch_size,
            weighting=kwargs.get("weighting"),
        )
        return ImdbData(
            dataset(train_size, 1, batch_size),
            dataset(validation_size, 2, batch_size),
            dataset(test_size, 3, batch_size),
            vectorizer=None,
            vocabulary_size=vocab,
        )

    monkeypatch.setattr(moe_tf.data, "load_imdb", load_imdb)
    argv = [
        "--task",
        "imdb",
        "--model",
        "dense",
        "topk-moe",
        "--epochs",
        "1",
        "--train-size",
        "128",
        "--val-size",
        "32",
        "--test-size",
        "64",
        "--max-tokens",
        "1000",
        "--out",
        str(tmp_path),
        "--name",
        "imdb",
        "--no-plots",
        *SMALL,
    ]
    assert main(argv) == 0
    assert seen == dict(view="ngrams", max_tokens=1000, as_dataset=True, batch_size=32, weighting="nb")
    results = json.loads((tmp_path / "imdb-imdb" / "results.json").read_text())
    assert [r["model"] for r in results["results"]] == ["dense", "topk-moe"]
    # dense = one linear classifier on the 40 n-gram features; topk-moe = router + 4 linear experts, 2 active.
    dense, topk = results["results"]
    assert dense["total_params"] == 40 * 2 + 2
    assert topk["total_params"] == 40 * 4 + 4 * (40 * 2 + 2)  # --experts 4
    assert topk["active_params"] == 40 * 4 + 2 * (40 * 2 + 2)
    assert topk["active_flops"] == 2 * (40 * 4 + 2 * 40 * 2)
    assert topk["test_dropped"] is not None
    assert not (tmp_path / "imdb-imdb" / "curves.png").exists()


def test_missing_data_exits_1_with_the_message(tmp_path, capsys, monkeypatch):
    message = "mnist.npz was found neither in MOE_TF_DATA_DIR=/nowhere nor in the cache, and the download failed."

    def load_mnist(**kwargs):
        raise DataUnavailableError(message)

    monkeypatch.setattr(moe_tf.data, "load_mnist", load_mnist)
    with pytest.raises(SystemExit) as exc:
        main(["--model", "dense", "--out", str(tmp_path)])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--task", "mnist"], 1.25),
        (["--task", "imdb"], None),  # linear experts compute every expert anyway: no dropping by default
        (["--task", "mnist", "--capacity-factor", "none"], None),  # an explicit 'none' is not replaced
        (["--task", "imdb", "--capacity-factor", "2"], 2.0),
    ],
)
def test_capacity_factor_defaults_per_task(argv, expected):
    from moe_tf.course.train import _resolve, build_parser

    parser = build_parser()
    args = _resolve(parser.parse_args(argv), parser)
    assert args.capacity_factor == expected


# -- start-up noise ----------------------------------------------------------------

# What TensorFlow's C++ logging prints at start-up: absl's "WARNING: All log messages before
# absl::InitializeLog() ..." notice, glog-style lines ("I0000 00:00:1700000000.000000  1234 file.cc:42]"),
# the CPU feature guard's "This TensorFlow binary is optimized ..." and its "To enable the following
# instructions" continuation, and oneDNN's notice.
TF_NOISE = ("WARNING: All log messages", "This TensorFlow binary", "To enable the following", "oneDNN")


def _cli(name):
    """The command line of a course CLI: the `moe-grade` script beside this Python when installed."""
    if name == "moe-grade":
        script = os.path.join(os.path.dirname(sys.executable), "moe-grade")
        return [script] if os.path.exists(script) else [sys.executable, "-m", "moe_tf.course.grade"]
    return [sys.executable, "-m", name]


@pytest.mark.parametrize(
    "name, first",
    [
        ("moe_tf.data", "usage: python -m moe_tf.data"),
        ("moe_tf", "usage: python -m moe_tf {train}"),
        ("moe-grade", "usage: moe-grade"),
    ],
)
def test_cli_first_line_is_its_own(name, first):
    """With TF_CPP_MIN_LOG_LEVEL unset (conftest sets it for the tests), `--help` of each CLI prints its
    own usage first: the package sets TensorFlow's log level before TensorFlow is imported."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run(
        [*_cli(name), "--help"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout
    lines = proc.stdout.splitlines()
    assert lines and lines[0].startswith(first), f"{name} --help printed first:\n" + "\n".join(lines[:6])
    noise = [line for line in lines if line.startswith(TF_NOISE) or re.match(r"[IWEF]\d{4} \d\d:\d\d:\d\d\.", line)]
    assert not noise, f"{name} --help printed TensorFlow's log lines:\n" + "\n".join(noise)


def test_cli_log_level_can_be_overridden():
    """The package only sets a default: a TF_CPP_MIN_LOG_LEVEL you export reaches TensorFlow unchanged."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"}
    code = "import os, moe_tf; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=180)
    assert proc.stdout.strip() == "0", proc.stderr[-2000:]
