#!/usr/bin/env python
"""Runs one command as N cooperating JAX processes on this machine.

Each process gets ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` /
``JAX_PROCESS_ID`` (read by ``fcn_jax.distributed.maybe_initialize``) and, on
CPU, its own number of fake devices. Logs go to ``--log_dir/process_<i>.log``.
SIGTERM and SIGINT are forwarded to every process (to try preemption), and the
launcher exits with the first non-zero exit code.

Example (2 processes x 2 CPU devices = a 4-device run):

  python launch/local.py --num_processes 2 --devices_per_process 2 -- \\
      python -m fcn_jax.main --config configs/quickstart.py --workdir /tmp/run
"""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--num_processes", type=int, default=2)
  parser.add_argument("--devices_per_process", type=int, default=1,
                      help="Fake CPU devices per process (CPU only).")
  parser.add_argument("--port", type=int, default=0,
                      help="Coordinator port on localhost (0 = pick a free one).")
  parser.add_argument("--log_dir", default=None,
                      help="Per-process logs (default: print to this terminal).")
  parser.add_argument("command", nargs=argparse.REMAINDER,
                      help="The command to run, after '--'.")
  args = parser.parse_args(argv)
  command = args.command[1:] if args.command[:1] == ["--"] else args.command
  if not command:
    parser.error("give the command to run after '--'")
  if args.num_processes < 1:
    parser.error("--num_processes must be >= 1")
  port = args.port or _free_port()
  log_dir = pathlib.Path(args.log_dir) if args.log_dir else None
  if log_dir:
    log_dir.mkdir(parents=True, exist_ok=True)

  procs, logs = [], []
  for pid in range(args.num_processes):
    env = dict(os.environ)
    env.update({
        "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
        "JAX_NUM_PROCESSES": str(args.num_processes),
        "JAX_PROCESS_ID": str(pid),
    })
    if env.get("JAX_PLATFORMS", "cpu") == "cpu":
      env["JAX_PLATFORMS"] = "cpu"
      flags = [f for f in env.get("XLA_FLAGS", "").split()
               if not f.startswith("--xla_force_host_platform_device_count")]
      flags.append("--xla_force_host_platform_device_count="
                   f"{args.devices_per_process}")
      env["XLA_FLAGS"] = " ".join(flags)
    out = None
    if log_dir:
      out = open(log_dir / f"process_{pid}.log", "w")
      logs.append(out)
    procs.append(subprocess.Popen(command, env=env, stdout=out,
                                  stderr=subprocess.STDOUT if out else None))

  def forward(signum, frame):
    del frame
    for p in procs:
      if p.poll() is None:
        p.send_signal(signum)

  signal.signal(signal.SIGTERM, forward)
  signal.signal(signal.SIGINT, forward)
  codes = [None] * len(procs)
  while any(c is None for c in codes):
    for i, p in enumerate(procs):
      if codes[i] is None:
        codes[i] = p.poll()
    failed = [c for c in codes if c not in (None, 0)]
    if failed:  # one process died: the others would wait forever
      for p in procs:
        if p.poll() is None:
          p.terminate()
      for p in procs:
        p.wait()
      break
    time.sleep(0.2)
  for f in logs:
    f.close()
  codes = [p.wait() for p in procs]
  for pid, code in enumerate(codes):
    if code:
      print(f"process {pid} exited with {code}", file=sys.stderr)
  return next((c for c in codes if c), 0)


if __name__ == "__main__":
  sys.exit(main())
