"""Execute course notebooks and store their outputs without machine noise.

    python tools/nbrun.py notebooks/01_*.ipynb            # full run, outputs written back
    python tools/nbrun.py --smoke notebooks/*.ipynb       # smoke run (MOE_TF_SMOKE=1), nothing written
    python tools/nbrun.py --clean notebooks/*.ipynb       # only re-clean the stored outputs

A full run executes the notebook top to bottom in a fresh kernel with the
repository's Python, then cleans it before writing it back:

- TensorFlow / absl / XLA log lines are removed from the stream outputs,
- this machine's absolute paths in the text outputs become portable ones:
  `<site-packages>/keras/...` for an installed package's file, `<repo>/...`
  inside the repository, `~/...` under the home folder (a learner has none
  of this machine's folders; tests/course/test_docs.py checks that none is left),
- execution counts are renumbered 1, 2, 3, ... and per-cell execution
  metadata is dropped, so re-running an unchanged notebook changes only the
  numbers a run really changes,
- the kernel metadata is reduced to the kernel name and the language.

Each notebook runs with its own folder as the working directory. The wall
time, the kernel's CPU time and the load average of each run are printed (and
in `--json`), for `notebooks/README.md`: on a shared machine the wall time
grows with the load, the CPU time much less.
"""

import argparse
import json
import os
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

# Lines a TensorFlow program prints on stderr that say nothing about the lesson.
NOISE = re.compile(
    r"^("
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] |"  # TF C++ logging: "2026-11-22 10:00:00.000000: I tensorflow/..."
    r"[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ |"  # absl logging: "I0000 00:00:1700000000.000000  1234 ..."
    r"WARNING: All log messages before absl::InitializeLog|"
    r"To enable the following instructions: |"
    r"This TensorFlow binary is optimized|"
    r"oneDNN custom operations are on|"
    r"To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`|"
    r"WARNING:absl:|"
    r"E0000 |W0000 |I0000 "
    r")"
)


# This machine's folders, rewritten in the outputs (most specific first): an installed package's
# file, the repository, the home folder.
SITE_PACKAGES = re.compile(r"(?<![\w.~$-])/[^\s'\"`()]*?/(site|dist)-packages/")
REPO = Path(__file__).resolve().parents[1]


def portable_paths(text):
    """`text` with this machine's absolute paths rewritten: `<site-packages>/...`, `<repo>/...`, `~/...`."""
    text = SITE_PACKAGES.sub(r"<\1-packages>/", text)
    for folder, name in ((REPO, "<repo>"), (Path.home(), "~")):
        if len(folder.parts) > 1:  # never rewrite "/" itself
            text = re.sub(r"(?<![\w.~$-])" + re.escape(str(folder)) + r"(?![\w-])", name, text)
    return text


def clean_text(text):
    lines = text.splitlines(keepends=True)
    return portable_paths("".join(line for line in lines if not NOISE.match(line)))


def clean(nb):
    """Removes log noise, renumbers execution counts, drops volatile metadata. In place; returns nb."""
    count = 0
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("collapsed", None)
        cell.metadata.pop("scrolled", None)
        if cell.cell_type != "code":
            continue
        if cell.get("execution_count") is None:
            continue
        count += 1
        cell.execution_count = count
        outputs = []
        for out in cell.outputs:
            if out.output_type == "stream":
                out.text = clean_text(out.text)
                if not out.text:
                    continue
            else:
                if "execution_count" in out:
                    out.execution_count = count
                if "text/plain" in out.get("data", {}):
                    out.data["text/plain"] = portable_paths(out.data["text/plain"])
            outputs.append(out)
        cell.outputs = outputs
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        **({"colab": nb.metadata["colab"]} if "colab" in nb.metadata else {}),
    }
    return nb


def execute(path, smoke, timeout):
    nb = nbformat.read(path, as_version=4)
    saved = {key: os.environ.get(key) for key in ("MOE_TF_SMOKE", "TF_CPP_MIN_LOG_LEVEL")}
    os.environ["MOE_TF_SMOKE"] = "1" if smoke else "0"  # the kernel inherits this process's environment
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # In smoke mode the notebook writes its files (plots, models) into a scratch folder, not next to itself.
    workdir = tempfile.mkdtemp(prefix="nbrun-") if smoke else str(Path(path).parent)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": workdir}}, allow_errors=False
    )
    start = time.perf_counter()
    cpu_start = _children_cpu()
    try:
        client.execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    stats = {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": _children_cpu() - cpu_start,
        "load": os.getloadavg()[0],
    }
    return nb, stats


def _children_cpu():
    """CPU seconds (user + system) of the finished child processes: the kernel, once it has shut down."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("notebooks", nargs="+", type=Path)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true", help="MOE_TF_SMOKE=1, do not write the notebook back")
    mode.add_argument("--clean", action="store_true", help="do not execute; only clean the stored outputs")
    p.add_argument("--timeout", type=int, default=900, help="seconds per cell (default: 900)")
    p.add_argument("--json", type=Path, help="append {notebook, mode, seconds} records to this JSON file")
    args = p.parse_args(argv)

    records = []
    for path in args.notebooks:
        if not path.is_file() or path.suffix != ".ipynb":
            p.error(f"argument notebooks: expected existing .ipynb files; received {str(path)!r}")
        if args.clean:
            nb = clean(nbformat.read(path, as_version=4))
            nbformat.write(nb, path)
            print(f"cleaned {path}")
            continue
        nb, stats = execute(path, args.smoke, args.timeout)
        mode = "smoke" if args.smoke else "full"
        seconds, cpu, load = stats["seconds"], stats["cpu_seconds"], stats["load"]
        # On a shared machine the wall time grows with the load; the kernel's CPU time does not.
        print(f"{path}: {mode} run {seconds:.1f} s wall, {cpu:.1f} s CPU, load average {load:.1f}", flush=True)
        records.append(
            {
                "notebook": path.name,
                "mode": mode,
                "seconds": round(seconds, 1),
                "cpu_seconds": round(cpu, 1),
                "load": round(load, 1),
            }
        )
        if not args.smoke:
            nbformat.write(clean(nb), path)
    if args.json and records:
        old = json.loads(args.json.read_text()) if args.json.exists() else []
        args.json.write_text(json.dumps(old + records, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
