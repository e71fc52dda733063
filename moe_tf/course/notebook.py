"""What every course notebook shares: the SMOKE switch, seeding, and a timer.

A notebook starts with

    from moe_tf.course import notebook as nb
    nb.setup(seed=0)                      # prints versions and the run mode
    EPOCHS = nb.pick(full=10, smoke=1)    # one knob, two modes

`MOE_TF_SMOKE=1` (or `true`/`yes`) in the environment selects smoke mode:
small subsets and one epoch, so that CI can execute every notebook in about
a minute each. The outputs committed with a notebook come from a full run
(`python tools/nbrun.py notebooks/NN_*.ipynb`).
"""

import contextlib
import os
import sys
import time

__all__ = ["INSTALL_CELL", "REPO_URL", "SMOKE", "colab_badge", "pick", "setup", "timed"]

REPO_URL = "https://github.com/moe-tf/moe-tf"

# The first code cell of every notebook (tests/course/test_notebooks.py checks it is this text).
# Colab already has TensorFlow, Keras, tensorflow-datasets and matplotlib: there only the
# course package is added (its `tensorflow-cpu` requirement would fight Colab's `tensorflow`).
INSTALL_CELL = f"""\
# Install moe-tf if it is missing (Colab, or a fresh environment). Nothing happens when it is installed.
import importlib.util, subprocess, sys
if importlib.util.find_spec("moe_tf") is None:
    colab = importlib.util.find_spec("google.colab") is not None
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *(["--no-deps"] if colab else []),
                    "moe-tf[course] @ git+{REPO_URL}"], check=True)"""

SMOKE = os.environ.get("MOE_TF_SMOKE", "0").strip().lower() in ("1", "true", "yes", "on")


def pick(full, smoke):
    """`smoke` in smoke mode (`MOE_TF_SMOKE=1`), else `full`."""
    return smoke if SMOKE else full


def setup(seed=0):
    """Seeds Python, NumPy and the backend, and prints the versions and the run mode.

    Returns the mode, `"smoke"` or `"full"`.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    import moe_tf

    keras.utils.set_random_seed(seed)
    mode = "smoke" if SMOKE else "full"
    python = ".".join(map(str, sys.version_info[:3]))
    print(
        f"moe_tf {moe_tf.__version__} | TensorFlow {tf.__version__} | Keras {keras.__version__} | "
        f"NumPy {np.__version__} | Python {python} | {os.cpu_count()} CPU cores | seed {seed}"
    )
    if SMOKE:
        print("SMOKE run (MOE_TF_SMOKE=1): small subsets and 1 epoch; the numbers below are not the lesson's.")
    else:
        print("full run")
    return mode


@contextlib.contextmanager
def timed(label):
    """Prints how long the block took: `with nb.timed("training"): model.fit(...)`.

    The yielded dict gets the time in seconds under `"seconds"` when the block ends.
    """
    result = {}
    start = time.perf_counter()
    try:
        yield result
    finally:
        result["seconds"] = time.perf_counter() - start
        print(f"{label}: {result['seconds']:.1f} s")


def colab_badge(notebook_path):
    """The Markdown "Open in Colab" badge of a notebook, e.g. `notebooks/01_x.ipynb`."""
    url = f"https://colab.research.google.com/github/{REPO_URL.split('github.com/')[1]}/blob/main/{notebook_path}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"
