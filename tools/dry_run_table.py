r"""Runs the dry run over the shipped nets for TPUs or GPUs; writes the table.

  nice -n 19 python tools/dry_run_table.py --kind gpu [--jobs 1] [--only SUBSTR]
  nice -n 19 venv_tpu/bin/python tools/dry_run_table.py --kind tpu --jobs 2
  python tools/dry_run_table.py --kind gpu --render  # The markdown from the JSON.

Each cell is one ``python -m fcn_jax.dry_run``. Results are merged into
``docs/<kind>_dry_run.json`` after every cell, so an interrupted run resumes
where it stopped (cells already there are skipped), and
``docs/<kind>_dry_run.md`` is rewritten from that file each time. The cells:
every distinct net of the reference repository in its reference config (one
native-size image per device, compiled at its dataset's largest bucket with
the images' true sizes, float32) on the device with the least memory of its
kind (and, for GPUs, on an H100 too); then the modern config in bfloat16
with a largest-batch search. Compiles are single-threaded (TPU: minutes each,
GPU: tens of seconds): run it under ``nice``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
GIB = 1 << 30

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


@dataclasses.dataclass(frozen=True)
class Table:
  """One kind's grid and page.

  Attributes:
    kind: ``tpu`` or ``gpu``.
    devices: Topology -> devices it has.
    reference: The topologies of the reference nets' rows.
    modern: The topologies of the modern config's rows.
    search_probes: Train-step compiles of a modern row's batch search.
    unit: What a device is called in the columns.
    intro: The page's text above the table (``{...}`` fields filled in).
  """
  kind: str
  devices: dict[str, int]
  reference: tuple[str, ...]
  modern: tuple[str, ...]
  search_probes: int
  unit: str
  intro: str

  @property
  def results(self) -> pathlib.Path:
    return REPO / "docs" / f"{self.kind}_dry_run.json"

  @property
  def page(self) -> pathlib.Path:
    return REPO / "docs" / f"{self.kind}_dry_run.md"

  def columns(self) -> tuple[str, ...]:
    u = self.unit
    return ("config", "topology", "dtype", "train batch @ size",
            f"train GiB used / available", f"train TFLOP/step/{u}",
            "eval batch @ size", "eval GiB used / available",
            f"eval TFLOP/step/{u}", f"largest train batch/{u}",
            "compile s train / eval")


TPU_INTRO = """# TPU dry run: memory and FLOPs per chip of the shipped nets

Made on a machine without a TPU by `python -m fcn_jax.dry_run` (deviceless
compilation with libtpu, jax {versions}, `config.parallel=pmap`),
driven by `tools/dry_run_table.py --kind tpu` from the results in
`docs/tpu_dry_run.json` ({done} of {cells} cells so far;
measured {date}). Re-make it with

```bash
python -m venv --system-site-packages venv_tpu
venv_tpu/bin/pip install -e ".[tpu]"
nice -n 19 venv_tpu/bin/python tools/dry_run_table.py --kind tpu --jobs 2
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
(`--find_max_batch --max_probes={probes}`: the config's batch and one
probe where a straight line through its memory puts the capacity; ">= N"
where that probe fitted too, so N is a lower bound, "< M" where a batch of M
did not fit). Compile: the train and eval steps' compile times on this
project's 2-core machine, at low priority beside other work (not a property
of the TPU).
"""

GPU_INTRO = """# GPU dry run: memory and FLOPs per GPU of the shipped nets

Made on a machine without a GPU by `python -m fcn_jax.dry_run` (deviceless
compilation with JAX's CUDA plugin, `pip install -e ".[gpu-aot]"`, jax
{versions}, `config.parallel=pmap`), driven by
`tools/dry_run_table.py --kind gpu` from the results in
`docs/gpu_dry_run.json` ({done} of {cells} cells so far; measured {date}).
Re-make it with

```bash
pip install -e ".[gpu-aot]"
nice -n 19 python tools/dry_run_table.py --kind gpu
```

Per GPU: the memory a step needs (arguments + outputs not aliased to the
donated state + temporaries + code, GiB) of the memory available to it, the
75% of the GPU's memory that JAX preallocates (H100 80 GB: 59.3 GiB;
A100 40 GB: 29.6 GiB); and the FLOPs of one step on one GPU. "batch @ size":
images per GPU and the padded size they are compiled at. Read the figures
as follows:

- **Memory is a lower bound.** Without a GPU the compiler cannot autotune
  its convolutions, so cuDNN's workspaces (scratch memory the chosen
  algorithms ask for at run time) are not in the temporaries. Keep headroom:
  a step that needs most of the available memory here may not fit on the
  card.
- **FLOPs are counted before optimisation**: the compile-only GPU compiler
  gives no cost analysis, so they are XLA's count on the step's lowered
  program (by the CPU client). On the CPU, where both can be counted, the
  optimised program's count agrees with it: to 0.03% for a full-width
  FCN-32s train step at 128x128, 0.6% at width/8 (`tests/dry_run_test.py`
  checks 2%).
- **Compile times** are this project's loaded 2-core machine's, one core per
  compile at low priority beside other work, not a GPU host's.

The first rows are every distinct net of the reference repository in its
reference config (batch 1 at native size, float32), on one A100 40 GB (the
smallest common data-centre GPU: what fits there fits the others) and on one
H100 80 GB. Each is compiled with one image per GPU at its dataset's largest
shape bucket, with the images' true sizes that the nets mask to
(`--native_size`): PASCAL VOC 500x500 (the VGG16 nets and FCN-AlexNet),
NYUDv2 480x640 (the Kinect frame, an upper bound for the repository's
cropped frames), SIFT Flow 256x256. The other shipped configs reuse these
nets with other class counts: FCN-32s-fixed and PASCAL-Context (VGG16
32s/16s/8s), NYUD colour and HHA alone (VGG16 FCN-32s, 40 classes), SIFT
Flow 32s/16s. Data parallel over more GPUs keeps the per-GPU figures of one
GPU at the same per-GPU batch (FCN-8s on `--topology a100-80:2x8`, 16 GPUs
on 2 hosts, `config.parallel=jit`, batch 16: 2.45 GiB and 1.08 TFLOP per GPU
to train, as on one A100).

The last row is the modern config in bfloat16 with its own batches (24 for
training, 16 for evaluation) on one H100, at its 320x320 crops and 512x512
evaluation padding. "Largest batch": the largest per-GPU training batch
that compiles within the available memory (`--find_max_batch
--max_probes={probes}`; ">= N" where the probe budget ended the search, so
N is a lower bound, "< M" where a batch of M did not fit).
"""

TABLES = {
    "tpu": Table("tpu", {"v5e-16": 16, "v4-8": 4, "v6e-8": 8},
                 reference=("v5e-16",), modern=("v5e-16", "v4-8", "v6e-8"),
                 search_probes=2, unit="chip", intro=TPU_INTRO),
    "gpu": Table("gpu", {"a100-40": 1, "h100": 1},
                 reference=("a100-40", "h100"), modern=("h100",),
                 search_probes=5, unit="GPU", intro=GPU_INTRO),
}


def cells(table: Table) -> list[dict]:
  """The grid: the reference nets, then the modern config's topologies."""
  grid = []
  for topology in table.reference:
    devices = table.devices[topology]
    for name, size in REFERENCE_NETS.items():
      grid.append(dict(config=name, topology=topology, dtype="float32",
                       overrides=[f"--config.batch_size={devices}",
                                  f"--config.eval_batch_size={devices}",
                                  f"--native_size={size}"],
                       search=False))
  for topology in table.modern:
    devices = table.devices[topology]
    batch = MODERN_BATCH if MODERN_BATCH % devices == 0 else (
        -(-MODERN_BATCH // devices) * devices)
    grid.append(dict(config=MODERN, topology=topology, dtype="bfloat16",
                     overrides=["--config.model.dtype=bfloat16",
                                f"--config.batch_size={batch}",
                                f"--config.eval_batch_size="
                                f"{MODERN_EVAL_BATCH}"],
                     search=True))
  for cell in grid:
    cell["key"] = f"{cell['config']}|{cell['topology']}|{cell['dtype']}"
  return grid


def command(table: Table, cell: dict, json_path: str) -> list[str]:
  args = [sys.executable, "-m", "fcn_jax.dry_run",
          "--config", f"configs/{cell['config']}.py",
          "--topology", cell["topology"], f"--json={json_path}",
          *cell["overrides"]]
  if cell["search"]:
    args += ["--find_max_batch", f"--max_probes={table.search_probes}"]
  return args


def _shell(args: list[str]) -> str:
  args = ["python" if a == sys.executable else a for a in args]
  return " ".join(a for a in args if not a.startswith("--json="))


def run_cell(table: Table, cell: dict, log_dir: pathlib.Path) -> dict:
  """Runs one cell; its console output goes to ``log_dir`` as it comes."""
  log_path = log_dir / (cell["key"].replace("|", "_") + ".log")
  with tempfile.TemporaryDirectory() as tmp, open(log_path, "w") as log:
    path = os.path.join(tmp, "cell.json")
    start = time.time()
    proc = subprocess.run(command(table, cell, path), cwd=REPO, stdout=log,
                          stderr=subprocess.STDOUT, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO),
                                   # libtpu locks itself to one process
                                   # unless told otherwise.
                                   ALLOW_MULTIPLE_LIBTPU_LOAD="1"))
    record = {"key": cell["key"], "command": _shell(command(table, cell, path)),
              "wall_seconds": round(time.time() - start),
              "exit_code": proc.returncode,
              "load_average": round(os.getloadavg()[0], 1)}
    if os.path.exists(path):
      with open(path) as f:
        record["result"] = json.load(f)
    else:  # Failed before any result: keep the error line.
      lines = log_path.read_text().strip().splitlines()
      record["error"] = lines[-1] if lines else f"exit {proc.returncode}"
  return record


def load(table: Table) -> dict:
  if table.results.exists():
    return json.loads(table.results.read_text())
  return {"cells": {}}


def _size(image_size: int | list[int]) -> str:
  """``HxW`` of a step's images (one int: a square)."""
  height, width = (image_size, image_size) if isinstance(
      image_size, int) else image_size
  return f"{height}x{width}"


def _gib(num_bytes: float) -> str:
  return f"{num_bytes / GIB:.2f}"


def _row(cell: dict, record: dict | None) -> str:
  head = f"| {cell['config']} | {cell['topology']}"
  if record is None or "result" not in record:
    what = "not run yet" if record is None else f"error: {record['error']}"
    return f"{head} | {cell['dtype']} | {what} |||||||"
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
  return (
      f"{head} ({r['chips']} x {r['device_kind']}, {r['hosts']} host(s)) | "
      f"{cell['dtype']} | {train['per_chip_batch']} @ "
      f"{_size(train['image_size'])} | {used(train)} | "
      f"{train['flops'] / 1e12:.2f} | "
      f"{evaluation['per_chip_batch']} @ {_size(evaluation['image_size'])} | "
      f"{used(evaluation)} | {evaluation['flops'] / 1e12:.2f} | "
      f"{largest} | {train['compile_seconds']:.0f} / "
      f"{evaluation['compile_seconds']:.0f} |")


def render(table: Table, results: dict) -> str:
  """The markdown page: how it was made, then one row per cell."""
  grid = cells(table)
  rows = [_row(cell, results["cells"].get(cell["key"])) for cell in grid]
  done = [c["result"] for c in results["cells"].values() if "result" in c]
  versions = sorted({d["jax"] for d in done}) or ["?"]
  loads = sorted(c["load_average"] for c in results["cells"].values()
                 if "load_average" in c)
  commands = "\n".join(
      results["cells"][c["key"]]["command"] for c in grid
      if c["key"] in results["cells"])
  columns = table.columns()
  header = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns)
  intro = table.intro.format(
      versions=", ".join(versions), done=len(done), cells=len(grid),
      date=results.get("date", "?"), probes=table.search_probes)
  load_line = (f"\nThe machine's 1-minute load average when the cells ended: "
               f"{loads[0]} to {loads[-1]} (2 cores).\n" if loads else "")
  return f"""{intro}
{header}
{chr(10).join(rows)}
{load_line}
The commands of the cells above:

```bash
{commands}
```
"""


def save(table: Table, results: dict) -> None:
  table.results.write_text(json.dumps(results, indent=1) + "\n")
  table.page.write_text(render(table, results))


def main() -> int:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--kind", choices=sorted(TABLES), required=True,
                      help="Which table: TPU slices (needs libtpu) or GPUs "
                      "(needs the CUDA plugin, the [gpu-aot] extra).")
  parser.add_argument("--jobs", type=int, default=1,
                      help="Cells compiled at the same time.")
  parser.add_argument("--only", default="",
                      help="Only cells whose key (config|topology|dtype) "
                      "contains this.")
  parser.add_argument("--log_dir", default="",
                      help="Each cell's console output, as it runs "
                      "(default: a dry_run_<kind>_logs folder in the temp "
                      "directory).")
  parser.add_argument("--render", action="store_true",
                      help="Only rewrite the markdown from the JSON.")
  args = parser.parse_args()
  table = TABLES[args.kind]
  results = load(table)
  if args.render:
    table.page.write_text(render(table, results))
    return 0
  todo = [c for c in cells(table) if c["key"] not in results["cells"]
          and args.only in c["key"]]
  log_dir = pathlib.Path(args.log_dir or os.path.join(
      tempfile.gettempdir(), f"dry_run_{table.kind}_logs"))
  log_dir.mkdir(parents=True, exist_ok=True)
  with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
    futures = [pool.submit(run_cell, table, cell, log_dir) for cell in todo]
    for future in concurrent.futures.as_completed(futures):
      record = future.result()
      results["cells"][record["key"]] = record
      results["date"] = time.strftime("%Y-%m-%d")
      save(table, results)
      print(f"{record['key']}: exit {record['exit_code']} in "
            f"{record['wall_seconds']} s", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
