"""Benchmark: what sparse routing buys, and what each dispatch costs.

Times one forward + backward step (`jit_compile=True`) of

- the dense mixture (every expert runs on every token),
- sparse top-k with gather/scatter dispatch (the default with a capacity),
- sparse top-k with no capacity and the dropless dispatch (the default of
  `MixtureOfExperts(k=2)`: nothing dropped, about k*T rows of expert compute),
- sparse top-k with one-hot einsum dispatch (the teaching version),
- a plain dense FFN whose hidden width is `k * expert_units`: the same active
  FLOPs per token as top-k routing at capacity factor 1.0 (a factor c > 1
  gives every expert c times more slots, hence c times more FLOPs),
- the experts alone: the same E batched expert MLPs on pre-grouped tokens,
  with no router and no dispatch, which separates the cost of routing from
  the cost of running E small matmuls instead of one large one,

for E in {4, 16, 64} and k in {1, 2}. The configurations of one table row are
timed in turns (A, B, C, D, A, B, ...) so that a slow moment of a shared
machine hits them all alike, and the median of each is kept. Then it measures
the peak memory of a training step of each dispatch, each in a fresh process.

The layers and the timed step come from `moe_tf.course.bench` (`make_layer`,
`make_step`, `time_row`), which the sparse-gating lesson uses too.

Every ratio printed comes from this one run. It is a benchmark, not a test:
it reports and never fails.

    python bench/dispatch.py            # the full table (about 3 minutes on 2 cores)
    python bench/dispatch.py --quick    # a small version, for `make demo`
"""

import argparse
import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from moe_tf.course.bench import make_layer, make_step, run_once, time_row  # noqa: E402

SMALL_TOKENS = 256  # the memory baseline: same program, few tokens


def _status_bytes(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(kind, num_experts, k, units, dim, tokens, capacity_factor):
    """Runs in a fresh process: prints the peak resident memory after two steps."""
    import tensorflow as tf

    x = tf.random.stateless_normal((tokens, dim), seed=(1, 2))
    step = make_step(make_layer(kind, num_experts, k, units, dim, capacity_factor))
    for _ in range(2):
        run_once(step, x)
    print(json.dumps({"peak_bytes": _status_bytes("VmHWM")}))


def peak_memory(kind, num_experts, k, units, dim, tokens, capacity_factor):
    args = [
        sys.executable,
        os.path.abspath(__file__),
        "--memory-child",
        kind,
        str(num_experts),
        str(k),
        str(units),
        str(dim),
        str(tokens),
        str(capacity_factor),
    ]
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"memory measurement failed ({' '.join(args[2:])}):\n{done.stderr[-2000:]}")
    out = done.stdout
    return json.loads(out.strip().splitlines()[-1])["peak_bytes"]


def step_memory(kind, num_experts, k, units, dim, tokens, capacity_factor):
    """Peak RSS at `tokens` minus peak RSS of the same program at 256 tokens.

    TensorFlow, the XLA compiler and the compiled program take a few hundred
    MiB whatever the batch; subtracting a small-batch run of the same
    program leaves the memory that grows with the tokens: activations,
    dispatch buffers and their gradients.
    """
    big = peak_memory(kind, num_experts, k, units, dim, tokens, capacity_factor)
    small = peak_memory(kind, num_experts, k, units, dim, SMALL_TOKENS, capacity_factor)
    return big - small


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="T=1024, E in {4, 16}, memory at 2048 tokens: ~1 min")
    parser.add_argument("--tokens", type=int, default=4096, help="tokens per step for the timings (default 4096)")
    parser.add_argument("--dim", type=int, default=128, help="model width d (default 128)")
    parser.add_argument("--units", type=int, default=256, help="hidden width h of each expert (default 256)")
    parser.add_argument(
        "--capacity-factor",
        type=float,
        default=1.0,
        help="capacity factor of the sparse layers (default 1.0: the same FLOPs as the FFN)",
    )
    parser.add_argument("--reps", type=int, default=15, help="timed steps per configuration (default 15)")
    parser.add_argument("--memory-tokens", type=int, default=8192, help="tokens for the memory comparison (8192)")
    parser.add_argument("--memory-child", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.memory_child:
        kind, e, k, units, dim, tokens, cf = args.memory_child
        memory_child(kind, int(e), int(k), int(units), int(dim), int(tokens), None if cf == "None" else float(cf))
        return

    experts_grid = (4, 16, 64)
    if args.quick:
        experts_grid, args.tokens, args.reps, args.memory_tokens = (4, 16), 1024, 5, 2048
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # one tf.function per configuration is on purpose, not a retracing bug
    cf, more_cf = args.capacity_factor, 1.25
    print(
        f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores, jit_compile=True. "
        f"T={args.tokens} tokens, d={args.dim}, expert hidden h={args.units}."
    )
    print(
        f"Median of {args.reps} forward+backward steps each; sparse layers at capacity factor {cf} "
        f"(and {more_cf} in one column); FFN hidden = k*h.\n"
    )
    x = tf.random.stateless_normal((args.tokens, args.dim), seed=(1, 2))
    header = (
        f"{'E':>3} {'k':>2} | {'dense MoE':>9} {'gather':>8} {f'gather@{more_cf}':>11} {'dropless':>8} "
        f"{'einsum':>8} {'experts':>8} {'FFN(k*h)':>8} | {'dense/gather':>12} {'dense/dropless':>14} "
        f"{'gather/FFN':>10} {'experts/FFN':>11} {'einsum/gather':>13}"
    )
    print(f"{'':6} | {'step time, ms':^68} | {'ratios':^65}")
    print(header)
    print("-" * len(header))
    rows = []
    for num_experts in experts_grid:
        for k in (1, 2):
            spec = lambda kind, c=cf: (kind, num_experts, k, args.units, args.dim, c)  # noqa: B023 (used in this iteration)
            configs = {
                "dense": spec("dense-moe", None),
                "gather": spec("gather"),
                "gather_more": spec("gather", more_cf),
                "dropless": spec("dropless", None),
                "einsum": spec("einsum"),
                "experts": spec("experts", None),
                "ffn": spec("ffn", None),
            }
            t = time_row(configs, x, args.reps)
            rows.append(dict(E=num_experts, k=k, **t))
            ms = {name: f"{value * 1e3:.1f}" for name, value in t.items()}
            print(
                f"{num_experts:>3} {k:>2} | {ms['dense']:>9} {ms['gather']:>8} {ms['gather_more']:>11} "
                f"{ms['dropless']:>8} {ms['einsum']:>8} {ms['experts']:>8} {ms['ffn']:>8} | "
                f"{t['dense'] / t['gather']:11.1f}x {t['dense'] / t['dropless']:13.1f}x "
                f"{t['gather'] / t['ffn']:9.2f}x {t['experts'] / t['ffn']:10.2f}x {t['einsum'] / t['gather']:12.1f}x",
                flush=True,
            )

    E_mem, k_mem = experts_grid[-1], 2
    print(
        f"\nMemory of one training step at T={args.memory_tokens} tokens, E={E_mem}, k={k_mem}, capacity factor "
        f"{cf}: peak RSS minus the peak of the same program at {SMALL_TOKENS} tokens (fresh process each):"
    )
    memory = {}
    for kind in ("dense-moe", "gather", "dropless", "einsum"):
        memory[kind] = step_memory(
            kind,
            E_mem,
            k_mem,
            args.units,
            args.dim,
            args.memory_tokens,
            None if kind in ("dense-moe", "dropless") else cf,
        )
        print(f"  {kind:<10} {memory[kind] / 2**20:8.0f} MiB")
    from moe_tf.routing import expert_capacity

    capacity = expert_capacity(args.memory_tokens, E_mem, k_mem, cf)
    one_hot_mib = args.memory_tokens * E_mem * capacity * 4 / 2**20
    print(f"  (one [T, E, C] float32 tensor of the einsum dispatch is {one_hot_mib:.0f} MiB at C={capacity})")

    print("\nTargets:")
    big = next(r for r in rows if r["E"] == E_mem and r["k"] == 2)
    limit = E_mem // 2
    print(f"  sparse top-2 of {E_mem} experts vs the dense mixture (the FLOP ratio E/k = {limit}x is the limit):")
    print(
        f"    no capacity (dropless, the default of MixtureOfExperts(k=2)): {big['dense'] / big['dropless']:.1f}x faster "
        f"(target >= {E_mem // 4}x)"
    )
    print(
        f"    capacity factor {more_cf} (gather): {big['dense'] / big['gather_more']:.1f}x faster (target >= {E_mem // 4}x)"
    )
    print(f"    capacity factor {cf} (gather): {big['dense'] / big['gather']:.1f}x faster")
    worst = max(r["gather"] / r["ffn"] for r in rows)
    print(
        f"  sparse (gather) vs the dense FFN with the same active FLOPs: at most {worst:.2f}x over all rows "
        f"(target <= 1.5x); the experts' matmuls alone account for up to "
        f"{max(r['experts'] / r['ffn'] for r in rows):.2f}x"
    )
    print(
        f"  gather / einsum dispatch memory at {args.memory_tokens} tokens: "
        f"{memory['gather'] / memory['einsum']:.1%} (target <= 10%); dropless / einsum: "
        f"{memory['dropless'] / memory['einsum']:.1%}"
    )


if __name__ == "__main__":
    main()
