"""The accelerators the dry run knows: TPU slices and NVIDIA GPUs, as tables.

Hardware facts only (no JAX calls): the names ``--topology`` accepts, the
memory of each device, and for GPUs what the CUDA compiler needs to know of
the card (XLA's ``GpuTargetConfigProto``: compute capability, streaming
multiprocessors, shared memory, caches, clocks; the figures of NVIDIA's
specifications, as XLA's own target configs state them). Turning a name into
devices is :mod:`fcn_jax.aot.targets`.
"""

from __future__ import annotations

import dataclasses
import re

from fcn_jax.aot import GIB
from fcn_jax.aot import DryRunError

# --------------------------------------------------------------------------
# TPUs.
# --------------------------------------------------------------------------

# Cloud TPU accelerator types -> libtpu topology names (chips per axis).
TPU_TOPOLOGIES = {
    "v4-8": "v4:2x2x1", "v4-16": "v4:2x2x2", "v4-32": "v4:2x2x4",
    "v4-64": "v4:2x4x4", "v4-128": "v4:4x4x4",
    "v5p-8": "v5p:2x2x1", "v5p-16": "v5p:2x2x2", "v5p-32": "v5p:2x2x4",
    "v5p-64": "v5p:2x4x4", "v5p-128": "v5p:4x4x4",
    "v5e-1": "v5e:1x1", "v5e-4": "v5e:2x2", "v5e-8": "v5e:2x4",
    "v5e-16": "v5e:4x4", "v5e-32": "v5e:4x8", "v5e-64": "v5e:8x8",
    "v5e-128": "v5e:8x16", "v5e-256": "v5e:16x16",
    "v6e-1": "v6e:1x1", "v6e-4": "v6e:2x2", "v6e-8": "v6e:2x4",
    "v6e-16": "v6e:4x4", "v6e-32": "v6e:4x8", "v6e-64": "v6e:8x8",
    "v6e-128": "v6e:8x16", "v6e-256": "v6e:16x16",
}
# v4 and v5p chips have two TensorCores that JAX drives as one device.
MEGACORE_GENERATIONS = ("v4", "v5p")
# HBM per chip by JAX's device kind (Cloud TPU system architecture pages).
TPU_HBM_BYTES = {
    "TPU v4": 32 * GIB,
    "TPU v5 lite": 16 * GIB,
    "TPU v5": 95 * GIB,
    "TPU v5p": 95 * GIB,
    "TPU v6 lite": 32 * GIB,
}


def tpu_topology_name(topology: str) -> str:
  """A libtpu topology name (``v5e:4x4``) from either accepted form.

  Raises:
    DryRunError: Neither a known accelerator type nor a topology name.
  """
  name = topology.strip().lower().replace("v5litepod", "v5e")
  if name in TPU_TOPOLOGIES:
    return TPU_TOPOLOGIES[name]
  if re.fullmatch(r"v\d+[a-z]*:\d+(x\d+)+", name):
    return name
  raise DryRunError(
      f"--topology={topology}: not a TPU accelerator type (one of "
      f"{', '.join(TPU_TOPOLOGIES)}), a topology name such as v5e:4x4 or "
      f"v4:2x2x4, or a GPU ({', '.join(GPUS)}, e.g. h100:8 or h100:2x8).")


# --------------------------------------------------------------------------
# NVIDIA GPUs.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GpuSpec:
  """One NVIDIA data-centre GPU, as the CUDA compiler needs to know it.

  Attributes:
    device_kind: The name CUDA reports (JAX's ``device.device_kind``).
    memory_bytes: Device memory that CUDA reports (a little under the
      marketing figure).
    compute_capability: ``(major, minor)``: which instructions exist.
    sm_count: Streaming multiprocessors.
    fp32_units_per_sm: FP32 lanes per multiprocessor.
    shared_memory_per_sm: Bytes of shared memory per multiprocessor.
    shared_memory_per_block_optin: The most one block may opt into.
    l2_cache_bytes: Level-2 cache.
    clock_ghz: Boost clock.
    memory_bandwidth: Bytes per second of device memory.
  """
  device_kind: str
  memory_bytes: int
  compute_capability: tuple[int, int]
  sm_count: int
  fp32_units_per_sm: int
  shared_memory_per_sm: int
  shared_memory_per_block_optin: int
  l2_cache_bytes: int
  clock_ghz: float
  memory_bandwidth: int

  def target_config(self) -> str:
    """XLA's ``GpuTargetConfigProto`` in text form: what the compiler would
    otherwise ask a real GPU. Only fields every jaxlib since 0.5 reads (a
    newer field in the text makes an older jaxlib refuse all of it)."""
    major, minor = self.compute_capability
    return f"""gpu_device_info {{
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: {self.shared_memory_per_sm}
  threads_per_core_limit: 2048
  core_count: {self.sm_count}
  fpus_per_core: {self.fp32_units_per_sm}
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: {self.memory_bandwidth}
  l2_cache_size: {self.l2_cache_bytes}
  clock_rate_ghz: {self.clock_ghz}
  device_memory_size: {self.memory_bytes}
  shared_memory_per_block_optin: {self.shared_memory_per_block_optin}
  cuda_compute_capability {{ major: {major} minor: {minor} }}
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}}
platform_name: "CUDA"
dnn_version_info {{ major: 9 minor: 1 patch: 0 }}
device_description_str: "{self.device_kind}"
"""


_HOPPER = dict(compute_capability=(9, 0), sm_count=132, fp32_units_per_sm=128,
               shared_memory_per_sm=228 << 10,
               shared_memory_per_block_optin=227 << 10,
               l2_cache_bytes=50 << 20, clock_ghz=1.98)
_AMPERE = dict(compute_capability=(8, 0), sm_count=108, fp32_units_per_sm=64,
               shared_memory_per_sm=164 << 10,
               shared_memory_per_block_optin=163 << 10,
               l2_cache_bytes=40 << 20, clock_ghz=1.41)
# The SXM boards (the PCIe ones differ in clocks and bandwidth, not memory).
GPUS = {
    "h100": GpuSpec("NVIDIA H100 80GB HBM3", memory_bytes=84_942_979_072,
                    memory_bandwidth=3_352_320_000_000, **_HOPPER),
    "h200": GpuSpec("NVIDIA H200 141GB HBM3e", memory_bytes=151_397_597_184,
                    memory_bandwidth=4_800_000_000_000, **_HOPPER),
    "a100-80": GpuSpec("NVIDIA A100-SXM4-80GB", memory_bytes=85_100_068_864,
                       memory_bandwidth=2_039_040_000_000, **_AMPERE),
    "a100-40": GpuSpec("NVIDIA A100-SXM4-40GB", memory_bytes=42_331_013_120,
                       memory_bandwidth=1_555_200_000_000, **_AMPERE),
}
# JAX preallocates this fraction of a GPU's memory for its arrays unless
# XLA_CLIENT_MEM_FRACTION (formerly XLA_PYTHON_CLIENT_MEM_FRACTION) says
# otherwise: what a step may use.
JAX_GPU_MEMORY_FRACTION = 0.75


@dataclasses.dataclass(frozen=True)
class GpuTopology:
  """``hosts`` machines of ``gpus_per_host`` GPUs of one model."""
  model: str
  hosts: int
  gpus_per_host: int

  @property
  def spec(self) -> GpuSpec:
    return GPUS[self.model]

  @property
  def name(self) -> str:
    return f"{self.model}:{self.hosts}x{self.gpus_per_host}"


def is_gpu(topology: str) -> bool:
  """Whether ``--topology`` names GPUs (its model, before any ``:``)."""
  return topology.strip().lower().split(":")[0] in GPUS


def gpu_topology(topology: str) -> GpuTopology:
  """Parses ``MODEL``, ``MODEL:GPUS`` or ``MODEL:HOSTSxGPUS``.

  ``h100`` is one GPU, ``h100:8`` one host of 8, ``h100:2x8`` two hosts of
  8 (one process plays both, as on TPU).

  Raises:
    DryRunError: An unknown model or a malformed count.
  """
  match = re.fullmatch(r"([a-z0-9-]+)(?::(?:(\d+)x)?(\d+))?",
                       topology.strip().lower())
  if not match or match.group(1) not in GPUS:
    raise DryRunError(
        f"--topology={topology}: not a GPU of {', '.join(GPUS)} written as "
        "MODEL, MODEL:GPUS or MODEL:HOSTSxGPUS (e.g. h100:8, a100-40:2x8).")
  hosts = int(match.group(2) or 1)
  per_host = int(match.group(3) or 1)
  if hosts < 1 or per_host < 1:
    raise DryRunError(f"--topology={topology}: hosts and GPUs per host must "
                      "be at least 1.")
  return GpuTopology(match.group(1), hosts, per_host)
