"""Shared defaults for every training/evaluation config, with every field.

The defaults reproduce the reference "heavy" VOC solver of FCN-32s
(docs/reference.md §5): batch 1 at native image size, a loss summed over the
valid pixels, SGD with momentum 0.99, a fixed learning rate of 1e-10, weight
decay 5e-4 on weights only, biases at twice the learning rate, 100k iterations
and an evaluation every 4000. Config files in ``configs/`` import this module
and override a few fields::

  from fcn_jax import default_config

  def get_config():
    config = default_config.get_config()
    config.model.name = "fcn16s"
    return config

Any field can be overridden on the command line with ``--config.<field>=...``;
an unknown field is an error.
"""

from __future__ import annotations

import difflib
import ml_collections

from fcn_jax import compilation_cache
from fcn_jax import models

MODES = ("train", "eval", "train_and_eval")
SCHEDULES = ("fixed", "poly", "cosine")
# config.optim.trainable: every layer (the reference) or only the score
# layers (FCN-32s-fixed, CVPR Table 2).
TRAINABLE = ("all", "score")
# Groups whose keys are the user's (head name -> dataset feature).
FREE_FORM = ("dataset.label_features",)


def get_config() -> ml_collections.ConfigDict:
  """Returns the default config (reference voc-fcn32s training)."""
  config = ml_collections.ConfigDict()

  # What to run: "train", "eval" (the workdir's checkpoint, or init_from) or
  # "train_and_eval" (train, evaluating every eval_every_steps and at the end).
  config.mode = "train_and_eval"
  # Seeds parameter init, dropout and loss sampling (the data order has its own
  # seed, input.sampling_seed).
  config.seed = 0
  # Global batch sizes (summed over all devices and hosts).
  config.batch_size = 1
  config.eval_batch_size = 1
  # Optimizer updates (Caffe iterations). With optim.iter_size = k each update
  # consumes k batches.
  config.num_train_steps = 100_000
  # Evaluate on dataset.eval_split every this many updates (<= 0: only at the
  # end of training).
  config.eval_every_steps = 4000
  # Console, TensorBoard and JSON-lines training scalars every this many
  # updates (the loss shown is the mean over the interval).
  config.log_every_steps = 20
  # Initial weights: a weights-export directory (fcn_jax_weights.json), a
  # training workdir or one of its checkpoint step directories. Layers are
  # copied by name (32s -> 16s -> 8s staging); others keep their init. Empty:
  # from scratch (the trunk is randomly initialised).
  config.init_from = ""
  # Without init_from: "he_normal" (trunk kernels drawn for ReLU nets, see
  # train.scratch_init) or "flax_default" (LeCun normal).
  config.scratch_init = "he_normal"
  # Input preprocessing preset ("caffe_vgg", "keras_vgg", "torchvision").
  # Empty: the one stored with the init_from weights, else "caffe_vgg".
  config.preprocessing = ""
  # Allow a preprocessing that differs from the one the weights were trained
  # with (otherwise that is an error).
  config.force_preprocessing = False
  # How steps run data-parallel (fcn_jax.parallel): "pmap" (jax.pmap) or "jit"
  # (jax.jit + shard_map over one global Mesh, NamedSharding'd global arrays).
  # Both give the same results.
  config.parallel = "pmap"
  # Validation image tiles (image | label | prediction) written to TensorBoard
  # at each evaluation.
  config.num_eval_tiles = 4
  # JAX's persistent compilation cache (fcn_jax.compilation_cache): compiled
  # steps are stored here and reused by later runs on GPUs and TPUs. Default
  # $FCN_JAX_COMPILATION_CACHE_DIR, else ~/.cache/fcn_jax/jax_cache; empty =
  # off.
  config.compilation_cache_dir = compilation_cache.default_directory()

  # The model: every field of fcn_jax.models.ModelSpec, with its defaults
  # (name "fcn32s" ... "fcn8s_atonce", num_classes, width_divisor, dtype,
  # learn_upsampling, dropout_rate, upsample_mode); their meanings are in
  # ModelSpec's docstring, and ModelSpec checks every value. Here
  # model.num_classes = 0 also means "the dataset's class count" (recorded in
  # its metadata); a non-zero count must equal the dataset's.
  config.model = ml_collections.ConfigDict(models.ModelSpec().to_dict())

  # Data (read by fcn_jax.data.input_pipeline).
  config.dataset = ml_collections.ConfigDict()
  # The TFDS name of a prepared dataset (python -m fcn_jax.prepare_data):
  # "voc_seg" (VOC2012 + SBD, seg11valid), "nyud", "sift_flow",
  # "pascal_context", the NAME of your own folder dataset (prepared with
  # `prepare_data --dataset folder --name NAME`, e.g. "my_cats"; "my_cats:1.0.0"
  # pins a version) or "synthetic_shapes" (generated; "synthetic_shapes/tiny"
  # for tests). configs/folder_quickstart.py and configs/folder_fcn8s.py leave
  # it empty: give it with --config.dataset.name=NAME.
  config.dataset.name = "voc_seg"
  # TFDS data directory; empty = the TFDS default (~/tensorflow_datasets).
  config.dataset.data_dir = ""
  config.dataset.train_split = "sbd_train"
  config.dataset.eval_split = "seg11valid"
  # The dataset feature holding each head's labels, by head name; empty =
  # segmentation_mask for a one-head net (SIFT Flow's two heads:
  # {"sem": "semantic_mask", "geo": "geometric_mask"}). The input features
  # follow from model.name (NYUD's nets read hha / depth).
  config.dataset.label_features = ml_collections.ConfigDict()

  config.input = ml_collections.ConfigDict()
  # "reference": draw one image uniformly at random with replacement per
  # example, as the Caffe data layer (seeded by sampling_seed); "epochs":
  # shuffled passes.
  config.input.train_mode = "reference"
  # Square training crop (padded with the ignore label when smaller); 0 = the
  # native image size (the reference; needs a per-device batch of 1).
  config.input.crop_size = 0
  config.input.random_mirror = False
  # Random rescaling range (min, max) before cropping; (1, 1) = none.
  config.input.scale_range = (1.0, 1.0)
  # Pad evaluation images to this square size (padding never counts in the
  # metrics); 0 = native size, exactly as the reference.
  config.input.eval_pad_size = 0
  # Shape buckets (fcn_jax.data.buckets) for native sizes: training with
  # crop_size=0 (and no rescaling) and evaluation with eval_pad_size=0 pad
  # each image (after preprocessing) to a bucket and the net masks every
  # layer to the image's true extent, so the results are the native-size
  # ones while XLA compiles once per bucket instead of once per image size,
  # and native-size images can be batched. "auto": at most max_buckets
  # sizes chosen from the split's size histogram; "HxW,HxW,...": these
  # (every image must fit one); "none": the per-shape path (batch 1 per host,
  # a compile per distinct size).
  config.input.buckets = "auto"
  config.input.max_buckets = 4
  # Grain worker processes (0 = in the main process).
  config.input.num_workers = 0
  # Seed of the reference data order (Python random seeded with 1337).
  config.input.sampling_seed = 1337
  config.input.prefetch_buffer_size = 2

  config.optim = ml_collections.ConfigDict()
  # Learning rate of the weights (docs/reference.md §5.1): 1e-10 for 32s,
  # 1e-12 for 16s, 1e-14 for 8s with the summed loss.
  config.optim.base_lr = 1e-10
  config.optim.momentum = 0.99
  # L2 decay added to the gradient before momentum (Caffe), times the layer's
  # decay multiplier.
  config.optim.weight_decay = 5e-4
  # Caffe's lr_mult / decay_mult of biases (weights have 1 / 1; frozen layers
  # 0 / 0).
  config.optim.bias_lr_mult = 2.0
  config.optim.bias_decay_mult = 0.0
  # "fixed" (Caffe), "poly" ((1 - t/T)^poly_power) or "cosine", after an
  # optional linear warmup from 0.
  config.optim.schedule = "fixed"
  config.optim.warmup_steps = 0
  # Final learning rate of poly/cosine as a fraction of base_lr.
  config.optim.end_lr_factor = 0.0
  config.optim.poly_power = 0.9
  # Gradient accumulation (Caffe iter_size): the mean of this many batches'
  # gradients per update.
  config.optim.iter_size = 1
  # "sum": summed over the valid pixels of each image, averaged over the images
  # of the batch (Caffe normalize: false, i.e. BATCH_SIZE normalisation; with
  # batch 1 this is the plain sum). "valid": mean over the valid pixels of the
  # global batch (Caffe normalize: true).
  config.optim.loss_normalization = "sum"
  # Keep each pixel in the loss with this probability (the paper's §4.3 loss
  # sampling experiment); 1 = every pixel.
  config.optim.loss_sampling_p = 1.0
  # "all": train every layer the model does not fix (the reference);
  # "score": only the score layers, the trunk frozen (CVPR Table 2's
  # FCN-32s-fixed, configs/voc_fcn32s_fixed.py).
  config.optim.trainable = "all"
  # Per-class loss weights (num_classes floats); empty = unweighted.
  config.optim.class_weights = ()

  # Test-time augmentation of evaluation (fcn_jax.inference.tta; the reference used
  # none): average the logits of the mirrored images and/or of rescaled copies.
  config.tta = ml_collections.ConfigDict()
  config.tta.flip = False
  config.tta.scales = (1.0,)

  # Evaluation (fcn_jax.evaluation.evaluator.evaluate).
  config.eval = ml_collections.ConfigDict()
  # Class names left out of the class means (mean accuracy, mean IU) and of
  # the f.w. IU of the head that has them, e.g. SIFT Flow's classes absent
  # from its test set (cow, desert, moon); "head:name" picks a head. Their
  # IU is still reported per class.
  config.eval.exclude_classes = ()

  config.checkpoint = ml_collections.ConfigDict()
  # Keep the latest N checkpoints ...
  config.checkpoint.max_to_keep = 2
  # ... saved every this many updates (and at the end) ...
  config.checkpoint.every_steps = 4000
  # ... plus the best N by mean IU among the evaluated ones (0 = none).
  config.checkpoint.keep_best = 1

  return config


def unknown_fields(config: ml_collections.ConfigDict,
                   defaults: ml_collections.ConfigDict | None = None,
                   prefix: str = "") -> list[tuple[str, str | None]]:
  """The fields of ``config`` that :func:`get_config` does not have.

  A config file may only set the fields defined here: a misspelt one
  (``config.optim.base_rl = 10.0``) would otherwise be accepted, recorded
  and ignored. :data:`FREE_FORM` groups take any keys.

  Returns:
    ``(dotted path, the closest known sibling or None)`` per unknown field,
    in the config's order.
  """
  defaults = get_config() if defaults is None else defaults
  unknown = []
  for key, value in config.items():
    path = prefix + key
    if key not in defaults:
      close = difflib.get_close_matches(key, list(defaults.keys()), n=1)
      unknown.append((path, close[0] if close else None))
    elif (isinstance(value, ml_collections.ConfigDict)
          and isinstance(defaults[key], ml_collections.ConfigDict)
          and path not in FREE_FORM):
      unknown += unknown_fields(value, defaults[key], path + ".")
  return unknown
