"""PyTorch runners for the benchmarks: the same FCN timed in the same run.

``torch_eager`` is the plain baseline: float32, NCHW, dense upsampling, no
compilation (what pytorch-fcn does). ``torch_best`` is the fastest of a list
of candidate settings, each a ``+`` list of

* ``channels_last``: NHWC memory format for the model and the input;
* ``compile``: ``torch.compile`` (inductor; for inference with weight freezing);
* ``depthwise``: per-class (``groups=C``) transposed convolutions, the same
  function as the dense ones (as fcn_jax's ``upsample_mode='depthwise'``);

and bfloat16 rows run under AMP autocast (bf16 compute, float32 parameters).
The training step does the math of fcn_jax's (:func:`caffe_sgd`): the pixel
cross-entropy ignoring label 255, averaged over the valid pixels, and SGD with
the momentum, learning rate, weight decay and bias multipliers of
``jax_bench.train_config``; the upsamplers (and at-once Scale layers) have
``requires_grad=False``, so they stay fixed as fcn_jax's frozen layers.
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
from typing import Any

import jax
import torch
import torch.nn.functional as F

from benchmarks import common
from benchmarks import jax_bench
from benchmarks import torch_fcn

OPTIONS = ("channels_last", "compile", "depthwise")


def torch_device() -> torch.device:
  """CUDA when JAX runs on a GPU (and torch has CUDA), else the CPU."""
  if jax.devices()[0].platform == "gpu":
    if not torch.cuda.is_available():
      raise RuntimeError(
          "JAX runs on a GPU but this torch build has no CUDA; install a CUDA "
          "build of torch (see benchmarks/README.md) or drop --torch.")
    return torch.device("cuda")
  return torch.device("cpu")


def parse_setting(setting: str) -> frozenset[str]:
  options = frozenset(o for o in setting.split("+") if o and o != "eager")
  unknown = options - set(OPTIONS)
  if unknown:
    raise ValueError(f"Unknown PyTorch option(s) {sorted(unknown)} in "
                     f"{setting!r}; choose from {OPTIONS}.")
  return options


def caffe_sgd(model: torch.nn.Module, optim: Any) -> torch.optim.SGD:
  """``torch.optim.SGD`` doing the update of ``fcn_jax.training.optim`` (Caffe's).

  Weights get ``base_lr`` and ``weight_decay``; biases ``bias_lr_mult`` times
  the rate and ``bias_decay_mult`` times the decay (those of
  ``model.default_bias_layers`` are treated as weights); parameters without
  gradients (the frozen layers) are left out. PyTorch applies the rate after
  the momentum (``v = mu v + g; w -= lr v``) and Caffe before it
  (``v = mu v + lr g; w -= v``); with a fixed rate both give the same
  weights.

  Args:
    model: The :class:`torch_fcn.TorchFCN`.
    optim: A ``config.optim`` group (``jax_bench.train_config``).

  Returns:
    The optimizer.
  """
  if optim.schedule != "fixed" or optim.iter_size != 1:
    raise ValueError("the PyTorch peer step supports only optim.schedule="
                     "'fixed' and optim.iter_size=1")
  trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
  # Caffe's default multipliers (FCN-AlexNet's trunk): biases as weights.
  like_weights = {f"trunk.{layer}.bias" for layer in model.default_bias_layers}
  is_bias = lambda n: n.endswith(".bias") and n not in like_weights
  weights = [p for n, p in trainable if not is_bias(n)]
  biases = [p for n, p in trainable if is_bias(n)]
  return torch.optim.SGD(
      [{"params": weights, "lr": optim.base_lr,
        "weight_decay": optim.weight_decay},
       {"params": biases, "lr": optim.base_lr * optim.bias_lr_mult,
        "weight_decay": optim.weight_decay * optim.bias_decay_mult}],
      lr=optim.base_lr, momentum=optim.momentum)


def pixel_loss(logits: torch.Tensor, labels: torch.Tensor,
               normalization: str) -> torch.Tensor:
  """fcn_jax's ``valid`` loss: cross-entropy averaged over non-255 pixels."""
  if normalization != "valid":
    raise ValueError(f"the PyTorch peer step implements loss_normalization="
                     f"'valid' only, got {normalization!r}")
  return F.cross_entropy(logits.float(), labels, ignore_index=255)


def default_best_candidates() -> list[str]:
  if jax.devices()[0].platform == "gpu":  # Eager too, should compile fail.
    return ["channels_last+compile+depthwise", "channels_last+depthwise"]
  return ["depthwise", "channels_last+depthwise"]


class TorchRunner:
  """The PyTorch FCN's forward pass or train step in one setting."""

  def __init__(self, row: common.Row, train: bool, setting: str, label: str,
               feed: str = "device"):
    self.row = row
    self.train = train
    self.setting = setting
    self.options = parse_setting(setting)
    self.label = label
    self.feed = feed
    # The eager baseline is float32 whatever the row's dtype.
    self.amp = row.dtype == "bfloat16" and label != "torch_eager"
    self.facts: dict[str, Any] = {
        "setting": setting + ("+amp_bf16" if self.amp else "")}

  def setup(self) -> None:
    row = self.row
    self.device = torch_device()
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    memory_format = (torch.channels_last if "channels_last" in self.options
                     else torch.contiguous_format)
    upsample = "depthwise" if "depthwise" in self.options else "dense"
    model = torch_fcn.TorchFCN(row.model, width_divisor=row.width_divisor,
                               upsample_mode=upsample)
    model = model.to(self.device, memory_format=memory_format)
    model.train(self.train)
    images = common.random_images(row.batch, row.size).transpose(0, 3, 1, 2)
    self.host_images = torch.from_numpy(images.copy()).contiguous(
        memory_format=memory_format)
    self.host_labels = torch.from_numpy(
        common.random_labels(row.batch, row.size)).long()
    if self.device.type == "cuda":
      self.host_images = self.host_images.pin_memory()
      self.host_labels = self.host_labels.pin_memory()
    self.images = self.host_images.to(self.device)
    self.labels = self.host_labels.to(self.device)
    self.memory_format = memory_format
    if self.train:
      self.optim_config = jax_bench.train_config(row).optim
      self.optimizer = caffe_sgd(model, self.optim_config)
    if "compile" in self.options:
      if not self.train:
        import torch._inductor.config as inductor_config  # pylint: disable=g-import-not-at-top
        inductor_config.freezing = True
      torch._dynamo.reset()  # pylint: disable=protected-access
      model = torch.compile(model, dynamic=False)
    self.model = model
    start = time.perf_counter()
    self.run(3)  # Warm-up: cudnn autotuning, compilation.
    self.facts["warmup_seconds"] = time.perf_counter() - start

  def _autocast(self):
    if not self.amp:
      return contextlib.nullcontext()
    return torch.autocast(self.device.type, dtype=torch.bfloat16)

  def _batch(self):
    if self.feed == "device":
      return self.images, self.labels
    return (self.host_images.to(self.device, non_blocking=True),
            self.host_labels.to(self.device, non_blocking=True))

  def _sync(self) -> None:
    if self.device.type == "cuda":
      torch.cuda.synchronize()

  def run(self, steps: int) -> float:
    start = time.perf_counter()
    if self.train:
      for _ in range(steps):
        images, labels = self._batch()
        with self._autocast():
          logits = self.model(images)
        loss = pixel_loss(logits, labels,
                          self.optim_config.loss_normalization)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
    else:
      with torch.inference_mode(), self._autocast():
        for _ in range(steps):
          images, _ = self._batch()
          self.model(images)
    self._sync()
    return time.perf_counter() - start

  def teardown(self) -> None:
    for name in ("model", "optimizer", "images", "labels", "host_images",
                 "host_labels"):
      self.__dict__.pop(name, None)
    gc.collect()
    if torch.cuda.is_available():
      torch.cuda.empty_cache()


class BestTorchRunner:
  """The fastest of several PyTorch settings, picked during warm-up."""
  label = "torch_best"

  def __init__(self, row: common.Row, train: bool, candidates: list[str],
               feed: str = "device"):
    self.candidates = [TorchRunner(row, train, c, self.label, feed)
                       for c in candidates]
    self.chosen: TorchRunner | None = None
    self.facts: dict[str, Any] = {}

  def setup(self) -> None:
    if len(self.candidates) == 1:
      self.chosen = self.candidates[0]
      self.chosen.setup()
    else:
      timings, failures = {}, {}
      for runner in self.candidates:  # At most two set up at a time.
        try:
          runner.setup()
          timings[runner.setting] = min(runner.run(1) for _ in range(2))
        except Exception as error:  # pylint: disable=broad-except
          failures[runner.setting] = repr(error)[:500]
          print(f"torch setting {runner.setting!r} failed: {error!r}",
                flush=True)
          runner.teardown()
          continue
        if (self.chosen is None
            or timings[runner.setting] < timings[self.chosen.setting]):
          if self.chosen is not None:
            self.chosen.teardown()
          self.chosen = runner
        else:
          runner.teardown()
      self.facts["candidate_seconds_per_step"] = timings
      if failures:
        self.facts["candidate_failures"] = failures
      if self.chosen is None:
        raise RuntimeError(f"every PyTorch setting failed: {failures}")
    self.facts |= self.chosen.facts

  def run(self, steps: int) -> float:
    return self.chosen.run(steps)

  def teardown(self) -> None:
    if self.chosen is not None:
      self.chosen.teardown()


def torch_runners(row: common.Row, train: bool, args: Any) -> list[Any]:
  """The PyTorch columns requested by the flags."""
  if os.cpu_count():
    torch.set_num_threads(os.cpu_count())
  runners = []
  if not args.no_torch_eager:
    runners.append(TorchRunner(row, train, "eager", "torch_eager", args.feed))
  candidates = (args.torch_best.split(",") if args.torch_best
                else default_best_candidates())
  runners.append(BestTorchRunner(row, train, candidates, args.feed))
  return runners
