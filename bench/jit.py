"""Benchmark: is `jit_compile=True` (XLA) faster than eager for the main job's models?

For each model of `make demo` (`moe_tf.course.models.build_model` with the MNIST
defaults of `python -m moe_tf train`: width 256, 8 experts of 256 units,
dropout 0.3, input dropout 0.2, capacity factor 1.25, batch 125), it trains
on random MNIST-shaped data with and without XLA and prints the median
milliseconds per training step after compilation (`moe_tf.callbacks.StepTimer`)
and their ratio. Both settings of one model are timed in turns (eager, jit,
eager, jit, ...: `--rounds` short fits each), so a slow moment of a shared
machine hits both alike.

Why it exists: before the course drew its random numbers with Philox
(`moe_tf.rng`), Keras's dropout and the routers' noise made XLA *slower* on
CPU (48 ms per step with XLA against 8 eagerly for the plain model).

    python bench/jit.py                  # about 2 minutes on 2 cores
    python bench/jit.py --experts 64     # the same at E = 64

It reports and never fails.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experts", type=int, default=8, help="experts of the MoE models (default 8)")
    parser.add_argument("--steps", type=int, default=40, help="training steps per fit (default 40)")
    parser.add_argument("--rounds", type=int, default=3, help="fits per setting, in turns (default 3)")
    parser.add_argument("--batch-size", type=int, default=125, help="batch size (default 125, as make demo)")
    args = parser.parse_args(argv)

    import keras
    import numpy as np
    import tensorflow as tf

    from moe_tf.callbacks import StepTimer
    from moe_tf.course.models import MODELS, build_model

    rng = np.random.default_rng(0)
    n = args.steps * args.batch_size
    x = rng.random((n, 784), dtype=np.float32)
    y = rng.integers(0, 10, n)
    print(
        f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores. MNIST-shaped random data, batch {args.batch_size}, "
        f"E={args.experts}; median ms per training step after compilation, {args.rounds} x {args.steps} steps each.\n"
    )
    print(f"{'model':<10} {'eager':>8} {'jit':>8} {'eager/jit':>10}")
    print("-" * 39)
    for name in MODELS:
        models = {}
        for jit in (False, True):
            keras.utils.set_random_seed(0)
            model = build_model(
                name, 784, 10, num_experts=args.experts, dropout=0.3, input_dropout=0.2, capacity_factor=1.25
            )
            model.compile(
                keras.optimizers.Adam(1e-3),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                jit_compile=jit,
            )
            models[jit] = model
        times = {False: [], True: []}
        for _ in range(args.rounds):
            for jit, model in models.items():
                timer = StepTimer()
                model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0, shuffle=False, callbacks=[timer])
                times[jit].extend(timer.times)
        eager, jit = (float(np.median(times[j]) * 1e3) for j in (False, True))
        print(f"{name:<10} {eager:7.1f}  {jit:7.1f}  {eager / jit:9.2f}x", flush=True)


if __name__ == "__main__":
    main()
