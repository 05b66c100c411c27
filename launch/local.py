#!/usr/bin/env python
"""Runs one command as N cooperating JAX processes on this machine.

Each process gets ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` /
``JAX_PROCESS_ID`` (read by ``fcn_jax.distributed.maybe_initialize``) and, on
CPU, its own number of fake devices. Logs go to ``--log_dir/process_<i>.log``.
SIGTERM and SIGINT are forwarded to every process (to try preemption), and the
launcher exits with the first non-zero exit code. When one process fails the
others are stopped. No process outlives the launcher: one that has not exited
``--kill_after`` seconds after a forwarded signal (or a peer's failure) is
killed (a process stuck in a collective cannot handle a SIGTERM), and on Linux
each is killed if the launcher itself dies.

Example (2 processes x 2 CPU devices = a 4-device run):

  python launch/local.py --num_processes 2 --devices_per_process 2 -- \\
      python -m fcn_jax.main --config configs/quickstart.py --workdir /tmp/run
"""

from __future__ import annotations

import argparse
import ctypes
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


def _die_with_parent() -> None:
  """In the child, before exec: SIGKILL when the launcher dies (Linux)."""
  if sys.platform.startswith("linux"):
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


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
  parser.add_argument("--kill_after", type=float, default=120,
                      help="Seconds the processes get to exit after a "
                      "forwarded SIGTERM/SIGINT or a peer's failure, before "
                      "they are killed.")
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
                                  stderr=subprocess.STDOUT if out else None,
                                  preexec_fn=_die_with_parent))

  kill_at = [None]  # When to kill the processes that are still running.

  def stop(signum):
    for p in procs:
      if p.poll() is None:
        p.send_signal(signum)
    if kill_at[0] is None:
      kill_at[0] = time.monotonic() + args.kill_after

  signal.signal(signal.SIGTERM, lambda signum, frame: stop(signum))
  signal.signal(signal.SIGINT, lambda signum, frame: stop(signum))
  while any(p.poll() is None for p in procs):
    if kill_at[0] is None and any(p.poll() not in (None, 0) for p in procs):
      stop(signal.SIGTERM)  # One failed: the others would wait forever.
    if kill_at[0] is not None and time.monotonic() > kill_at[0]:
      for pid, p in enumerate(procs):
        if p.poll() is None:
          print(f"process {pid} did not exit {args.kill_after:g} s after "
                "being asked to stop: killing it", file=sys.stderr)
          p.kill()
      break
    time.sleep(0.2)
  codes = [p.wait() for p in procs]
  for f in logs:
    f.close()
  for pid, code in enumerate(codes):
    if code:
      print(f"process {pid} exited with {code}", file=sys.stderr)
  return next((c for c in codes if c), 0)


if __name__ == "__main__":
  sys.exit(main())
