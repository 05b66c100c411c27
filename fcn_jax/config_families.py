"""The reference solvers of the NYUD, SIFT Flow and PASCAL-Context families.

One ``get_config(arg)``-style builder per family (as big_vision's configs
take their variant as an argument), so that the nets of a family differ only
in what the reference changes between them: the net, the learning rate and
what it starts from (docs/reference.md §5.1, §5.3, §8.2-§8.4). The config
files call them: ``configs/nyud.py:color_hha`` (``--config
configs/nyud.py:color_hha``) and the per-net files that came first
(``configs/nyud_fcn32s_color_hha.py``) give the same config. They live here,
not in ``configs/``, because config files are loaded by path and cannot
import one another.

Common to the three families: batch 1 at native size, summed loss, momentum
0.99, weight decay 5e-4 (the defaults of ``fcn_jax/default_config.py``).
"""

from __future__ import annotations

import dataclasses

import ml_collections

from fcn_jax import default_config
from fcn_jax import errors

VGG16_WEIGHTS = "weights/vgg16_caffe"


@dataclasses.dataclass(frozen=True)
class Variant:
  """One net of a family.

  Attributes:
    model: The net (:data:`fcn_jax.models.MODEL_NAMES`).
    base_lr: The reference solver's learning rate.
    init_from: What training starts from (``config.init_from``).
  """
  model: str
  base_lr: float
  init_from: str = VGG16_WEIGHTS


@dataclasses.dataclass(frozen=True)
class Family:
  """A dataset's reference nets and the solver settings they share.

  Attributes:
    name: The family's config file, ``configs/<name>.py``.
    dataset: The fcn_jax dataset (also the preprocessing preset).
    num_classes: Classes of the (first) head.
    train_split: The reference's training split.
    eval_split: The reference's evaluation split.
    eval_every: Iterations between evaluations (the solve.py loop's step);
      checkpoints are written as often.
    num_train_steps: 50 evaluations' worth (the solve.py loop).
    variants: The nets by the family file's argument, the first the default.
    exclude_classes: ``config.eval.exclude_classes`` (None: the default's).
    label_features: ``config.dataset.label_features`` (multi-head nets).
  """
  name: str
  dataset: str
  num_classes: int
  train_split: str
  eval_split: str
  eval_every: int
  num_train_steps: int
  variants: dict[str, Variant]
  exclude_classes: tuple[str, ...] | None = None
  label_features: dict[str, str] | None = None

  def get_config(self, arg: str | None = None) -> ml_collections.ConfigDict:
    """The reference solver of the variant ``arg`` (None: the first)."""
    arg = arg or next(iter(self.variants))
    if arg not in self.variants:
      raise errors.UserError(
          f"configs/{self.name}.py: unknown variant {arg!r}; use one of "
          f"{', '.join(self.variants)} (--config configs/{self.name}.py:"
          f"{next(iter(self.variants))})")
    variant = self.variants[arg]
    config = default_config.get_config()
    config.model.name = variant.model
    config.model.num_classes = self.num_classes
    config.init_from = variant.init_from
    config.preprocessing = self.dataset
    # The reference fine-tunes VGG16 (trained with the ImageNet mean) with
    # the dataset's own mean, which contradicts the mean the VGG16 export
    # records; later stages start from this project's runs, which agree.
    if variant.init_from == VGG16_WEIGHTS:
      config.force_preprocessing = True
    config.dataset.name = self.dataset
    config.dataset.train_split = self.train_split
    config.dataset.eval_split = self.eval_split
    if self.label_features:
      config.dataset.label_features = dict(self.label_features)
    if self.exclude_classes is not None:
      config.eval.exclude_classes = self.exclude_classes
    config.optim.base_lr = variant.base_lr
    config.num_train_steps = self.num_train_steps
    config.eval_every_steps = self.eval_every
    config.checkpoint.every_steps = self.eval_every
    return config


def _staged(prefix: str, lrs: dict[str, float]) -> dict[str, Variant]:
  """FCN-32s from VGG16, then each stride from the previous one's run."""
  variants, previous = {}, ""
  for stride, lr in lrs.items():
    model = f"{prefix}_{stride}"
    variants[stride] = Variant(model, lr, f"runs/{previous}" if previous
                               else VGG16_WEIGHTS)
    previous = model
  return variants


# docs/reference.md §8.2: 795 trainval images, 654 test; the solve.py loop
# runs 50 x 2000 iterations (max_iter says 300k).
NYUD = Family(
    "nyud", "nyud", 40, "trainval", "test", 2000, 100_000,
    {"color": Variant("nyud_fcn32s_color", 1e-10),
     "hha": Variant("nyud_fcn32s_hha", 1e-10),
     "color_d": Variant("nyud_fcn32s_color_d", 1e-10),
     # Each stream from its trained single-modality net (surgery.transplant).
     "color_hha": Variant(
         "nyud_fcn32s_color_hha", 1e-12,
         "color=runs/nyud_fcn32s_color,hha=runs/nyud_fcn32s_hha")})

# docs/reference.md §8.3: 2,486 trainval images, 200 test; two heads. The
# FCN-8s keeps the reference solver's 1e-12 (not 1e-14). "cow", "desert" and
# "moon" are never in the test set: left out of the means, as the paper
# scores only the classes present (§7).
SIFT_FLOW = Family(
    "siftflow", "sift_flow", 33, "trainval", "test", 2000, 100_000,
    _staged("siftflow", {"fcn32s": 1e-10, "fcn16s": 1e-12, "fcn8s": 1e-12}),
    exclude_classes=("cow", "desert", "moon"),
    label_features={"sem": "semantic_mask", "geo": "geometric_mask"})

# docs/reference.md §8.4: VOC2010 train, 5,105 val images, 50 x 8000
# iterations (max_iter says 300k; which the authors ran is UNVERIFIED). The
# metrics count background as one of the 60 classes, as the reference's
# score.py does; ("background",) gives means over the 59 task classes.
PASCAL_CONTEXT = Family(
    "pascalcontext", "pascal_context", 60, "train", "val", 8000, 400_000,
    _staged("pascalcontext",
            {"fcn32s": 1e-10, "fcn16s": 1e-12, "fcn8s": 1e-14}),
    exclude_classes=())

FAMILIES = {f.name: f for f in (NYUD, SIFT_FLOW, PASCAL_CONTEXT)}
