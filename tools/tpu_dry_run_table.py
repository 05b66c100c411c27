r"""Runs the TPU dry run over the shipped nets; writes the table.

  venv_tpu/bin/python tools/tpu_dry_run_table.py [--jobs 2] [--only SUBSTR]
  python tools/tpu_dry_run_table.py --render   # The markdown from the JSON.

Each cell is one ``python -m fcn_jax.dry_run``. Results are merged into
``docs/tpu_dry_run.json`` after every cell, so an interrupted run resumes
where it stopped (cells already there are skipped), and
``docs/tpu_dry_run.md`` is rewritten from that file each time. The cells:
every distinct net of the reference repository in its reference config (one
native-size image per chip, compiled at its dataset's largest bucket with the
images' true sizes, float32) on v5e-16, the chip with the least HBM; and the
modern config in bfloat16 on three slices with a largest-batch search.
Compiles are single-threaded and take minutes each: run it under ``nice``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "tpu_dry_run.json"
TABLE = REPO / "docs" / "tpu_dry_run.md"
GIB = 1 << 30

# Slice -> chips.
SLICES = {"v5e-16": 16, "v4-8": 4, "v6e-8": 8}
# The reference nets' slice: v5e has the least HBM per chip (16 GiB; v4 and
# v6e have 32), so a per-chip program that fits here fits those too.
REFERENCE_SLICE = "v5e-16"
# One config per distinct net of the reference repository -> its dataset's
# largest image (H, W), the largest of its auto buckets: PASCAL VOC 500x500;
# NYUDv2 480x640, the Kinect frame (an upper bound for the repository's
# cropped frames); SIFT Flow 256x256. The other shipped configs reuse these
# nets with other class counts (32s-fixed, PASCAL-Context, NYUD colour and
# HHA alone, SIFT Flow 32s/16s).
REFERENCE_NETS = {"voc_fcn32s": "500x500", "voc_fcn16s": "500x500",
                  "voc_fcn8s": "500x500", "voc_fcn8s_atonce": "500x500",
                  "voc_fcn_alexnet": "500x500",
                  "nyud_fcn32s_color_hha": "480x640",
                  "nyud_fcn32s_color_d": "480x640",
                  "siftflow_fcn8s": "256x256"}
MODERN = "voc_fcn8s_modern"
MODERN_BATCH, MODERN_EVAL_BATCH = 24, 16
# Train-step compiles of the largest-batch search of a modern cell.
SEARCH_PROBES = 2
COLUMNS = ("config", "slice", "dtype", "train batch @ size",
           "train GiB used / HBM", "train TFLOP/step/chip",
           "eval batch @ size", "eval GiB used / HBM", "eval TFLOP/step/chip",
           "largest train batch/chip", "compile s train / eval")


def cells() -> list[dict]:
  """The grid: the reference nets, then the modern config's slices."""
  grid = []
  chips = SLICES[REFERENCE_SLICE]
  for name, size in REFERENCE_NETS.items():
    grid.append(dict(config=name, topology=REFERENCE_SLICE, dtype="float32",
                     overrides=[f"--config.batch_size={chips}",
                                f"--config.eval_batch_size={chips}",
                                f"--native_size={size}"],
                     search=False))
  for topology, chips in SLICES.items():
    batch = MODERN_BATCH if MODERN_BATCH % chips == 0 else (
        -(-MODERN_BATCH // chips) * chips)
    grid.append(dict(config=MODERN, topology=topology, dtype="bfloat16",
                     overrides=["--config.model.dtype=bfloat16",
                                f"--config.batch_size={batch}",
                                f"--config.eval_batch_size="
                                f"{MODERN_EVAL_BATCH}"],
                     search=True))
  for cell in grid:
    cell["key"] = f"{cell['config']}|{cell['topology']}|{cell['dtype']}"
  return grid


def command(cell: dict, json_path: str) -> list[str]:
  args = [sys.executable, "-m", "fcn_jax.dry_run",
          "--config", f"configs/{cell['config']}.py",
          "--topology", cell["topology"], f"--json={json_path}",
          *cell["overrides"]]
  if cell["search"]:
    # The first batch and one probe where a straight line puts the capacity:
    # a lower bound, and exact when the probe does not fit one above it.
    args += ["--find_max_batch", f"--max_probes={SEARCH_PROBES}"]
  return args


def _shell(args: list[str]) -> str:
  args = ["python" if a == sys.executable else a for a in args]
  return " ".join(a for a in args if not a.startswith("--json="))


def run_cell(cell: dict, log_dir: pathlib.Path) -> dict:
  """Runs one cell; its console output goes to ``log_dir`` as it comes."""
  log_path = log_dir / (cell["key"].replace("|", "_") + ".log")
  with tempfile.TemporaryDirectory() as tmp, open(log_path, "w") as log:
    path = os.path.join(tmp, "cell.json")
    start = time.time()
    proc = subprocess.run(command(cell, path), cwd=REPO, stdout=log,
                          stderr=subprocess.STDOUT, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO),
                                   # libtpu locks itself to one process
                                   # unless told otherwise.
                                   ALLOW_MULTIPLE_LIBTPU_LOAD="1"))
    record = {"key": cell["key"], "command": _shell(command(cell, path)),
              "wall_seconds": round(time.time() - start),
              "exit_code": proc.returncode}
    if os.path.exists(path):
      with open(path) as f:
        record["result"] = json.load(f)
    else:  # Failed before any result: keep the error line.
      lines = log_path.read_text().strip().splitlines()
      record["error"] = lines[-1] if lines else f"exit {proc.returncode}"
  return record


def load() -> dict:
  if RESULTS.exists():
    return json.loads(RESULTS.read_text())
  return {"cells": {}}


def _size(image_size: int | list[int]) -> str:
  """``HxW`` of a step's images (one int: a square)."""
  height, width = (image_size, image_size) if isinstance(
      image_size, int) else image_size
  return f"{height}x{width}"


def _gib(num_bytes: float) -> str:
  return f"{num_bytes / GIB:.2f}"


def render(results: dict) -> str:
  """The markdown page: how it was made, then one row per cell."""
  rows = []
  for cell in cells():
    record = results["cells"].get(cell["key"])
    if record is None:
      rows.append(f"| {cell['config']} | {cell['topology']} | "
                  f"{cell['dtype']} | not run yet |||||||")
      continue
    if "result" not in record:
      rows.append(f"| {cell['config']} | {cell['topology']} | "
                  f"{cell['dtype']} | error: {record['error']} |||||||")
      continue
    r = record["result"]
    train, evaluation = r["train"], r["eval"]

    def used(step):
      if step["error"]:
        return f"out of memory / {_gib(step['capacity_bytes'])}"
      return f"{_gib(step['total_bytes'])} / {_gib(step['capacity_bytes'])}"

    largest = ""
    if cell["search"]:
      largest = str(r.get("max_per_chip_batch", ""))
      if not r.get("max_per_chip_batch_exact", True):
        above = r.get("first_failing_batch")
        largest = f">= {largest}" + (f", < {above}" if above else "")
    rows.append(
        f"| {cell['config']} | {cell['topology']} ({r['chips']} x "
        f"{r['device_kind']}, {r['hosts']} host(s)) | {cell['dtype']} | "
        f"{train['per_chip_batch']} @ {_size(train['image_size'])} | "
        f"{used(train)} | "
        f"{train['flops'] / 1e12:.2f} | "
        f"{evaluation['per_chip_batch']} @ {_size(evaluation['image_size'])} | "
        f"{used(evaluation)} | {evaluation['flops'] / 1e12:.2f} | "
        f"{largest} | {train['compile_seconds']:.0f} / "
        f"{evaluation['compile_seconds']:.0f} |")
  done = [c["result"] for c in results["cells"].values() if "result" in c]
  versions = sorted({d["jax"] for d in done}) or ["?"]
  commands = "\n".join(
      results["cells"][c["key"]]["command"] for c in cells()
      if c["key"] in results["cells"])
  header = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS)
  return f"""# TPU dry run: memory and FLOPs per chip of the shipped nets

Made on a machine without a TPU by `python -m fcn_jax.dry_run` (deviceless
compilation with libtpu, jax {', '.join(versions)}, `config.parallel=pmap`),
driven by `tools/tpu_dry_run_table.py` from the results in
`docs/tpu_dry_run.json` ({len(done)} of {len(cells())} cells so far;
measured {results.get('date', '?')}). Re-make it with

```bash
python -m venv --system-site-packages venv_tpu
venv_tpu/bin/pip install -e ".[tpu]"
nice -n 19 venv_tpu/bin/python tools/tpu_dry_run_table.py --jobs 2
```

Per chip: the HBM a step needs (arguments + outputs not aliased to the
donated state + temporaries + code, GiB) of the chip's HBM, and the FLOPs of
one step on one chip (XLA's count for the compiled program). "batch @ size":
images per chip and the padded size they are compiled at.

The first rows are every distinct net of the reference repository in its
reference config (batch 1 at native size, float32), on v5e-16: v5e has the
least HBM per chip (16 GiB; v4 and v6e have 32 GiB), so what fits a v5e chip
fits those too. Each is compiled with one image per chip at its dataset's
largest shape bucket, with the images' true sizes that the nets mask to
(`--native_size`): PASCAL VOC 500x500 (the VGG16 nets and FCN-AlexNet),
NYUDv2 480x640 (the Kinect frame; the repository's frames are cropped
smaller, so this is an upper bound), SIFT Flow 256x256. The other shipped
configs reuse these nets with other class counts: FCN-32s-fixed and
PASCAL-Context (VGG16 32s/16s/8s), NYUD colour and HHA alone (VGG16
FCN-32s, 40 classes), SIFT Flow 32s/16s (its 8s less skips). These rows
were compiled (2026-12-05) just before the first convolution learnt to skip
the outputs that see only its 100-pixel padding (`PaddedInputConv`); that
removes work and memory, so their figures are upper bounds.

The last rows are the modern config in bfloat16 with its own batches (24 for
training, or 32 where 24 does not split over the chips; 16 for evaluation),
at its 320x320 crops and 512x512 evaluation padding. "Largest batch": the
largest per-chip training batch that compiles within the chip's HBM
(`--find_max_batch --max_probes={SEARCH_PROBES}`: the config's batch and one
probe where a straight line through its memory puts the capacity; ">= N"
where that probe fitted too, so N is a lower bound, "< M" where a batch of M
did not fit). Compile: the train and eval steps' compile times on this
project's 2-core machine, at low priority beside other work (not a property
of the TPU).

{header}
{chr(10).join(rows)}

The commands of the cells above:

```bash
{commands}
```
"""


def save(results: dict) -> None:
  RESULTS.write_text(json.dumps(results, indent=1) + "\n")
  TABLE.write_text(render(results))


def main() -> int:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--jobs", type=int, default=1,
                      help="Cells compiled at the same time.")
  parser.add_argument("--only", default="",
                      help="Only cells whose key (config|slice|dtype) "
                      "contains this.")
  parser.add_argument("--log_dir", default="/tmp/tpu_dry_run_logs",
                      help="Each cell's console output, as it runs.")
  parser.add_argument("--render", action="store_true",
                      help="Only rewrite the markdown from the JSON.")
  args = parser.parse_args()
  results = load()
  if args.render:
    TABLE.write_text(render(results))
    return 0
  todo = [c for c in cells() if c["key"] not in results["cells"]
          and args.only in c["key"]]
  with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
    log_dir = pathlib.Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    futures = [pool.submit(run_cell, cell, log_dir) for cell in todo]
    for future in concurrent.futures.as_completed(futures):
      record = future.result()
      results["cells"][record["key"]] = record
      results["date"] = time.strftime("%Y-%m-%d")
      save(results)
      print(f"{record['key']}: exit {record['exit_code']} in "
            f"{record['wall_seconds']} s", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
