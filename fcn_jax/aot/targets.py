"""The devices of a topology, and what a compiled step may use on each.

Everything that differs between TPUs, GPUs and this machine's CPU lives
here: how the devices are made without the hardware (libtpu's topology; the
CUDA plugin's compile-only client from a target config; the real CPU
devices), the memory a step may use per device, and what the numbers mean
(the caveat printed with them). The rest of the dry run is one code path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import sys
import tempfile
from typing import Any, Iterator

import jax

from fcn_jax.aot import DryRunError
from fcn_jax.aot import GIB
from fcn_jax.aot import accelerators

TPU_INSTALL_HINT = (
    "libtpu (the TPU compiler) is not installed. Install the matching "
    "jax[tpu]: pip install -e '.[tpu]', or, to keep this environment as it "
    "is, python -m venv --system-site-packages venv_tpu && venv_tpu/bin/pip "
    f"install 'jax[tpu]=={jax.__version__}' (about 700 MB) and run the dry "
    "run with venv_tpu/bin/python.")
GPU_INSTALL_HINT = (
    "the CUDA compiler plugin is not installed: pip install -e '.[gpu-aot]' "
    f"(or pip install 'jax-cuda12-plugin=={jax.__version__}' "
    f"'jax-cuda12-pjrt=={jax.__version__}', about 180 MB; no GPU, driver or "
    "CUDA toolkit needed).")
GPU_CAVEAT = (
    "GPU figures are a lower bound: without a GPU the compiler cannot "
    "autotune, so cuDNN's convolution workspaces are not counted; "
    "'available' is the {fraction:.0%} of each GPU's memory that JAX "
    "preallocates.")
_PLUGIN_MODULE = "jax_plugins.xla_cuda12"


@dataclasses.dataclass(frozen=True)
class Target:
  """What the steps are compiled for.

  Attributes:
    kind: ``"tpu"``, ``"gpu"`` or ``"cpu"``.
    name: The topology in its canonical form (``v5e:4x4``, ``h100:1x8``).
    devices: Every device of every host, by process then id.
    memory_bytes: Each device's memory.
    capacity_bytes: What one step may use of it (``--hbm_gib`` overrides).
    caveat: What the figures do not include, printed with them ("" if none).
  """
  kind: str
  name: str
  devices: tuple[Any, ...]
  memory_bytes: int
  capacity_bytes: int
  caveat: str = ""

  @property
  def hosts(self) -> int:
    return len({d.process_index for d in self.devices})

  @property
  def device_kind(self) -> str:
    return self.devices[0].device_kind


def make_target(topology: str, capacity_gib: float = 0.0) -> Target:
  """The devices of ``--topology`` and the memory a step may use on each.

  Args:
    topology: ``cpu``, a TPU slice (``v5e-16``, ``v4:2x2x4``) or GPUs
      (``h100``, ``a100-40:8``, ``h100:2x8``).
    capacity_gib: Memory per device a step may use, in GiB; 0 = the
      device's (for GPUs JAX's preallocated share of it).

  Raises:
    DryRunError: An unknown topology, or the compiler is not installed.
  """
  override = int(capacity_gib * GIB) if capacity_gib > 0 else 0
  if topology.strip().lower() == "cpu":
    devices = tuple(jax.devices("cpu"))
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return Target("cpu", "cpu", devices, memory, override or memory)
  if accelerators.is_gpu(topology):
    gpus = accelerators.gpu_topology(topology)
    devices = gpu_devices(gpus)
    memory = gpus.spec.memory_bytes
    fraction = gpu_memory_fraction()
    return Target("gpu", gpus.name, devices, memory,
                  override or int(memory * fraction),
                  GPU_CAVEAT.format(fraction=fraction))
  name = accelerators.tpu_topology_name(topology)
  devices = tpu_devices(name)
  memory = hbm_bytes(devices[0])
  return Target("tpu", name, devices, memory, override or memory)


def hbm_bytes(device: Any) -> int:
  """The memory of one TPU chip or GPU, by JAX's device kind.

  Raises:
    DryRunError: An unknown device kind.
  """
  kind = device.device_kind
  for spec in accelerators.GPUS.values():
    if spec.device_kind == kind:
      return spec.memory_bytes
  if kind not in accelerators.TPU_HBM_BYTES:
    raise DryRunError(f"the memory of a {kind!r} device is not known here; "
                      "pass it as --hbm_gib.")
  return accelerators.TPU_HBM_BYTES[kind]


def gpu_memory_fraction() -> float:
  """The share of GPU memory JAX would preallocate on the target, from the
  environment as JAX reads it (set it here as there)."""
  for variable in ("XLA_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_MEM_FRACTION"):
    if os.environ.get(variable):
      try:
        return float(os.environ[variable])
      except ValueError as e:
        raise DryRunError(f"{variable}={os.environ[variable]!r} is not a "
                          "fraction such as 0.9.") from e
  return accelerators.JAX_GPU_MEMORY_FRACTION


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
  """Hides what native code prints to stderr (the runtimes' start-up
  warnings about the missing device); shows it again if the block raises."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    except BaseException:
      os.dup2(saved, 2)
      captured.seek(0)
      sys.stderr.write(captured.read().decode(errors="replace"))
      raise
    finally:
      os.dup2(saved, 2)
      os.close(saved)


def _sorted(devices: Any) -> tuple[Any, ...]:
  return tuple(sorted(devices, key=lambda d: (d.process_index, d.id)))


def tpu_devices(name: str) -> tuple[Any, ...]:
  """The abstract chips of a TPU slice (libtpu topology ``name``).

  Raises:
    DryRunError: libtpu is missing, or does not know the topology.
  """
  if importlib.util.find_spec("libtpu") is None:
    raise DryRunError(TPU_INSTALL_HINT)
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  generation = name.split(":")[0]
  chip_config = ("megacore" if generation in accelerators.MEGACORE_GENERATIONS
                 else "default")
  try:
    with _quiet_stderr():
      description = topologies.get_topology_desc(
          topology_name=name, platform="tpu", chip_config_name=chip_config)
  except Exception as e:  # pylint: disable=broad-except
    raise DryRunError(f"--topology={name}: libtpu does not know this "
                      f"topology ({e}).") from e
  return _sorted(description.devices)


def gpu_plugin_installed() -> bool:
  """Whether JAX's CUDA plugin (the compiler) can be imported."""
  try:
    return importlib.util.find_spec(_PLUGIN_MODULE) is not None
  except ModuleNotFoundError:  # No jax_plugins namespace at all.
    return False


def gpu_devices(gpus: accelerators.GpuTopology) -> tuple[Any, ...]:
  """Compile-only CUDA devices: ``gpus.hosts`` x ``gpus.gpus_per_host``.

  The CUDA plugin's client compiles for the card its target config
  describes; on a machine without a GPU JAX must run on the CPU
  (``JAX_PLATFORMS=cpu``), else the plugin fails its driver check and is
  not registered.

  Raises:
    DryRunError: The plugin is missing, or JAX did not register it.
  """
  if not gpu_plugin_installed():
    raise DryRunError(GPU_INSTALL_HINT)
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  try:
    with _quiet_stderr():
      description = topologies.get_topology_desc(
          platform="cuda", target_config=gpus.spec.target_config(),
          topology=f"1x{gpus.hosts}x{gpus.gpus_per_host}")
  except Exception as e:  # pylint: disable=broad-except
    raise DryRunError(
        f"--topology={gpus.name}: the CUDA plugin made no devices ({e}); on "
        "a machine without a GPU run with JAX_PLATFORMS=cpu, and install "
        f"the plugin of this jax ({jax.__version__}): pip install -e "
        "'.[gpu-aot]'.") from e
  return _sorted(description.devices)
