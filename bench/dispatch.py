"""Benchmark: what sparse routing buys, and what each dispatch costs.

Times one forward + backward step (`jit_compile=True`) of

- the dense mixture (every expert runs on every token),
- sparse top-k with gather/scatter dispatch (the library default),
- sparse top-k with one-hot einsum dispatch (the teaching version),
- a plain dense FFN whose hidden width is `k * expert_units`, i.e. the same
  active FLOPs per token as top-k routing,

for E in {4, 16, 64} and k in {1, 2}, then measures the peak memory of one
training step of each dispatch in a fresh subprocess. Every ratio printed
comes from timings taken in this one run. This is a benchmark, not a test:
timings on a shared machine are noisy, so it reports and never fails.

    python bench/dispatch.py            # full table (a few minutes on 2 cores)
    python bench/dispatch.py --quick    # small version, for `make demo`
"""

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def build_moe(kind, num_experts, k, units, capacity_factor, seed=0):
    import keras

    from moe_tf import MixtureOfExperts

    keras.utils.set_random_seed(seed)
    common = dict(num_experts=num_experts, expert_units=units, balance_loss="switch")
    if kind == "dense-moe":
        return MixtureOfExperts(**common)
    return MixtureOfExperts(**common, k=k, capacity_factor=capacity_factor, dispatch=kind)


def make_step(kind, num_experts, k, units, dim, capacity_factor):
    """A jit-compiled forward+backward step of one layer on `[T, dim]` tokens."""
    import keras
    import tensorflow as tf

    if kind == "ffn":
        keras.utils.set_random_seed(0)
        layer = keras.Sequential([keras.layers.Dense(k * units, activation="relu"), keras.layers.Dense(dim)])
    else:
        layer = build_moe(kind, num_experts, k, units, capacity_factor)

    @tf.function(jit_compile=True)
    def step(x):
        with tf.GradientTape() as tape:
            y = layer(x, training=True)
            loss = tf.reduce_mean(tf.square(y)) + sum(layer.losses)
        grads = tape.gradient(loss, layer.trainable_variables)
        return loss, grads

    return layer, step


def time_step(kind, num_experts, k, units, dim, tokens, capacity_factor, reps):
    import tensorflow as tf

    x = tf.random.stateless_normal((tokens, dim), seed=(1, 2))
    _, step = make_step(kind, num_experts, k, units, dim, capacity_factor)
    step(x)  # trace + compile
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        loss, grads = step(x)
        float(loss)  # wait for the result
        _ = [g.numpy() for g in grads[:1]]
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _rss_bytes(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(kind, num_experts, k, units, dim, tokens, capacity_factor):
    """Runs in a fresh process: peak RSS growth during training steps."""
    import tensorflow as tf

    x = tf.random.stateless_normal((tokens, dim), seed=(1, 2))
    _, step = make_step(kind, num_experts, k, units, dim, capacity_factor)
    step(x)  # compile once, outside the measured window
    before = _rss_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
        f.write("5")
    for _ in range(2):
        loss, _ = step(x)
        float(loss)
    peak = _rss_bytes("VmHWM")
    print(json.dumps({"peak_bytes": peak - before}))


def measure_memory(kind, num_experts, k, units, dim, tokens, capacity_factor):
    args = [sys.executable, __file__, "--_memory-child", kind, str(num_experts), str(k), str(units), str(dim),
            str(tokens), str(capacity_factor)]
    # Make glibc hand every large buffer straight back to the OS when freed, so
    # the peak RSS during the step is the step's own memory, not reused arenas.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    out = subprocess.run(args, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_bytes"]


def fmt_ms(seconds):
    return f"{seconds * 1e3:9.1f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes and E in {4, 16}: about a minute")
    parser.add_argument("--tokens", type=int, default=4096, help="tokens per step for the timings (default 4096)")
    parser.add_argument("--dim", type=int, default=128, help="model width d (default 128)")
    parser.add_argument("--units", type=int, default=256, help="hidden width of each expert (default 256)")
    parser.add_argument("--capacity-factor", type=float, default=1.25, help="capacity factor of sparse layers (1.25)")
    parser.add_argument("--reps", type=int, default=5, help="timed steps per configuration; the median is kept")
    parser.add_argument("--memory-tokens", type=int, default=8192, help="tokens for the memory comparison (8192)")
    parser.add_argument("--_memory-child", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._memory_child:
        kind, e, k, units, dim, tokens, cf = args._memory_child
        memory_child(kind, int(e), int(k), int(units), int(dim), int(tokens), float(cf))
        return

    experts_grid = (4, 16, 64)
    if args.quick:
        experts_grid, args.tokens, args.reps, args.memory_tokens = (4, 16), 1024, 3, 2048
    import tensorflow as tf

    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores, jit_compile=True")
    print(f"T={args.tokens} tokens, d={args.dim}, expert hidden={args.units}, capacity factor={args.capacity_factor}, "
          f"median of {args.reps} forward+backward steps\n")

    t_ffn = {k: time_step("ffn", 1, k, args.units, args.dim, args.tokens, None, args.reps) for k in (1, 2)}
    header = (f"{'E':>3} {'k':>2} | {'dense MoE ms':>12} {'gather ms':>10} {'einsum ms':>10} {'FFN(k*h) ms':>11} | "
              f"{'dense/gather':>12} {'gather/FFN':>10} {'einsum/gather':>13}")
    print(header)
    print("-" * len(header))
    results = []
    for num_experts in experts_grid:
        t_dense = time_step("dense-moe", num_experts, 1, args.units, args.dim, args.tokens, None, args.reps)
        for k in (1, 2):
            t_gather = time_step("gather", num_experts, k, args.units, args.dim, args.tokens, args.capacity_factor,
                                 args.reps)
            t_einsum = time_step("einsum", num_experts, k, args.units, args.dim, args.tokens, args.capacity_factor,
                                 args.reps)
            row = dict(E=num_experts, k=k, dense=t_dense, gather=t_gather, einsum=t_einsum, ffn=t_ffn[k])
            results.append(row)
            print(f"{num_experts:>3} {k:>2} | {fmt_ms(t_dense):>12} {fmt_ms(t_gather):>10} {fmt_ms(t_einsum):>10} "
                  f"{fmt_ms(t_ffn[k]):>11} | {t_dense / t_gather:11.1f}x {t_gather / t_ffn[k]:9.2f}x "
                  f"{t_einsum / t_gather:12.1f}x")

    E_mem, k_mem = experts_grid[-1], 2
    print(f"\nPeak memory of one training step, T={args.memory_tokens} tokens, E={E_mem}, k={k_mem} "
          f"(RSS growth above the compiled model, fresh process each):")
    memory = {}
    for kind in ("dense-moe", "gather", "einsum"):
        memory[kind] = measure_memory(kind, E_mem, k_mem, args.units, args.dim, args.memory_tokens,
                                      args.capacity_factor)
        print(f"  {kind:<10} {memory[kind] / 2**20:10.1f} MiB")
    capacity = int(np.ceil(args.capacity_factor * k_mem * args.memory_tokens / E_mem))
    one_hot_mib = args.memory_tokens * E_mem * capacity * 4 / 2**20
    print(f"  (each [T, E, C] one-hot tensor of the einsum dispatch alone is {one_hot_mib:.0f} MiB at C={capacity})")

    print("\nTargets:")
    big = [r for r in results if r["E"] == E_mem and r["k"] == 2][0]
    speedup = big["dense"] / big["gather"]
    print(f"  sparse top-2 of {E_mem} experts vs dense mixture: {speedup:.1f}x faster "
          f"(target >= {E_mem // 4}x; the FLOP limit is E/k = {E_mem // 2}x)")
    worst = max(r["gather"] / r["ffn"] for r in results)
    print(f"  sparse (gather) vs dense FFN with the same active FLOPs: at most {worst:.2f}x over all rows (target <= 1.5x)")
    ratio = memory["gather"] / memory["einsum"]
    print(f"  gather dispatch memory / einsum dispatch memory at {args.memory_tokens} tokens: {ratio:.1%} "
          f"(target <= 10%)")


if __name__ == "__main__":
    main()
