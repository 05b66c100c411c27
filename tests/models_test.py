"""Model tests against docs/reference.md: counts, shapes, kernels, numerics.

The numerical references here are written independently of the model: a
float64 NumPy transcription of the Caffe graph (convolution as
cross-correlation, ceil-mode pooling by brute force, Deconvolution by its
scatter-add definition on Caffe-layout blobs, crops by slicing).
"""

import functools
import math

from flax import linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcn_jax import errors
from fcn_jax import models
from tests.helpers import jit_apply
from tests.tiny_fcn import random_variables

# --------------------------------------------------------------------------
# Parameter counts (docs/reference.md §10).
# --------------------------------------------------------------------------

# (trainable, fixed) for 21 classes, from the spec's table.
SPEC_COUNTS = {
    "fcn32s": (134_346_581, 1_806_336),
    "fcn16s": (134_357_354, 458_640),
    "fcn8s": (134_362_751, 127_008),
    "fcn8s_atonce": (134_362_751, 127_776),
}


def _param_shapes(model, size=64):
  return jax.eval_shape(
      lambda: models.init_variables(model, image_size=size))["params"]


def _count(tree):
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("name", sorted(SPEC_COUNTS))
def test_parameter_counts_match_spec(name):
  model = models.create_model(name)
  params = _param_shapes(model)
  frozen = model.frozen_layers()
  fixed = _count({k: params[k] for k in frozen})
  trainable = _count({k: v for k, v in params.items() if k not in frozen})
  assert (trainable, fixed) == SPEC_COUNTS[name]


@pytest.mark.parametrize("classes,totals", [
    (40, (140_978_024, 136_108_944, 134_916_024)),
    (60, (149_251_964, 138_281_144, 135_589_364)),
])
def test_total_counts_for_other_class_counts(classes, totals):
  got = tuple(_count(_param_shapes(models.create_model(n, classes)))
              for n in ("fcn32s", "fcn16s", "fcn8s"))
  assert got == totals


def test_variable_tree_uses_caffe_names_and_layouts():
  params = _param_shapes(models.create_model("fcn8s"))
  assert set(params) == {
      "conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2",
      "conv3_3", "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2",
      "conv5_3", "fc6", "fc7", "score_fr", "upscore2", "score_pool4",
      "upscore_pool4", "score_pool3", "upscore8"}
  assert params["conv1_1"]["kernel"].shape == (3, 3, 3, 64)
  assert params["fc6"]["kernel"].shape == (7, 7, 512, 4096)
  assert params["fc7"]["kernel"].shape == (1, 1, 4096, 4096)
  assert params["score_pool3"]["kernel"].shape == (1, 1, 256, 21)
  assert set(params["upscore8"]) == {"kernel"}  # bias_term: false
  assert params["upscore8"]["kernel"].shape == (16, 16, 21, 21)


def test_frozen_layers_follow_learn_upsampling():
  assert models.create_model("fcn32s").frozen_layers() == ("upscore",)
  assert set(models.create_model("fcn8s").frozen_layers()) == {
      "upscore2", "upscore_pool4", "upscore8"}
  assert set(models.create_model(
      "fcn8s_atonce", learn_upsampling=True).frozen_layers()) == {
          "scale_pool4", "scale_pool3", "upscore8"}


def test_unknown_model_and_option_are_clear_errors():
  with pytest.raises(errors.UserError, match="fcn8s"):
    models.create_model("fcn4s")
  with pytest.raises(errors.UserError, match="widht_divisor"):
    models.create_model("fcn8s", widht_divisor=2)


# --------------------------------------------------------------------------
# Shapes (docs/reference.md §11).
# --------------------------------------------------------------------------

# Blob sizes per input size H (= W), from the spec's worked table.
SPEC_SHAPES = {
    "pool1": {500: 349, 1: 100, 37: 118, 224: 211, 375: 287, 512: 355},
    "pool2": {500: 175, 1: 50, 37: 59, 224: 106, 375: 144, 512: 178},
    "pool3": {500: 88, 1: 25, 37: 30, 224: 53, 375: 72, 512: 89},
    "pool4": {500: 44, 1: 13, 37: 15, 224: 27, 375: 36, 512: 45},
    "pool5": {500: 22, 1: 7, 37: 8, 224: 14, 375: 18, 512: 23},
    "fc7": {500: 16, 1: 1, 37: 2, 224: 8, 375: 12, 512: 17},
    "score_fr": {500: 16, 1: 1, 37: 2, 224: 8, 375: 12, 512: 17},
    "upscore2": {500: 34, 1: 4, 37: 6, 224: 18, 375: 26, 512: 36},
    "score_pool4": {500: 44, 1: 13, 37: 15, 224: 27, 375: 36, 512: 45},
    "score_pool4c": {500: 34, 1: 4, 37: 6, 224: 18, 375: 26, 512: 36},
    "upscore_pool4": {500: 70, 1: 10, 37: 14, 224: 38, 375: 54, 512: 74},
    "score_pool3": {500: 88, 1: 25, 37: 30, 224: 53, 375: 72, 512: 89},
    "score_pool3c": {500: 70, 1: 10, 37: 14, 224: 38, 375: 54, 512: 74},
    "upscore8": {500: 568, 1: 88, 37: 120, 224: 312, 375: 440, 512: 600},
    "score": {500: 500, 1: 1, 37: 37, 224: 224, 375: 375, 512: 512},
}
SPEC_UPSCORE_32S = {500: 544, 1: 64, 37: 96, 224: 288, 375: 416, 512: 576}
SPEC_UPSCORE_16S = {500: 560, 1: 80, 37: 112, 224: 304, 375: 432, 512: 592}


def _blob_shapes(model, height, width):
  params = _param_shapes(model)
  _, state = jax.eval_shape(
      lambda p, x: model.apply(p, x, mutable=["intermediates"]),
      {"params": params},
      jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32))
  return {k: v.shape for k, v in state["intermediates"]["blobs"][0].items()}


@pytest.mark.parametrize("size", [1, 37, 224, 375, 500, 512])
def test_fcn8s_shape_table(size):
  shapes = _blob_shapes(models.create_model("fcn8s"), size, size)
  for blob, by_size in SPEC_SHAPES.items():
    expected = by_size[size]
    assert shapes[blob][1:3] == (expected, expected), blob
  channels = {"pool1": 64, "pool2": 128, "pool3": 256, "pool4": 512,
              "pool5": 512, "fc7": 4096, "score_fr": 21, "upscore8": 21}
  for blob, c in channels.items():
    assert shapes[blob][3] == c, blob


@pytest.mark.parametrize("size", [1, 37, 224, 375, 500, 512])
def test_fcn32s_and_fcn16s_final_upsample_sizes(size):
  s32 = _blob_shapes(models.create_model("fcn32s"), size, size)
  s16 = _blob_shapes(models.create_model("fcn16s"), size, size)
  assert s32["upscore"][1:3] == (SPEC_UPSCORE_32S[size],) * 2
  assert s16["upscore16"][1:3] == (SPEC_UPSCORE_16S[size],) * 2
  assert s32["score"][1:3] == s16["score"][1:3] == (size, size)


def test_non_square_500x375():
  shapes = _blob_shapes(models.create_model("fcn8s"), 500, 375)
  assert shapes["pool3"][1:3] == (88, 72)
  assert shapes["pool4"][1:3] == (44, 36)
  assert shapes["fc7"][1:3] == (16, 12)
  assert shapes["upscore8"][1:3] == (568, 440)
  assert shapes["score"] == (1, 500, 375, 21)


def _output_shapes_match(name, heights):
  # Widths do not change shapes, so a tiny model traces fast.
  model = models.create_model(name, width_divisor=64)
  variables = {"params": _param_shapes(model)}
  for h in heights:
    w = 601 - h  # the heights reversed: small heights with large widths
    out = jax.eval_shape(model.apply, variables,
                         jax.ShapeDtypeStruct((2, h, w, 3), jnp.float32))
    assert out.shape == (2, h, w, 21), (name, h, w)
    assert out.dtype == jnp.float32


def test_fcn8s_output_matches_input_for_every_residue_of_32():
  """Every size up to 64 and the last 32 up to 600, both dimensions.

  Each blob's extent is floor or ceil of (size + c) / s with s dividing 32,
  and the crop offsets do not depend on the size, so adding 32 to an input
  side adds 32 / s to every blob's: what holds for each residue mod 32 at
  the smallest sizes (where a blob's extent bottoms out at 1) and at the
  largest holds for every size between.
  """
  _output_shapes_match("fcn8s", [*range(1, 65), *range(569, 601)])


@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s_atonce"])
def test_output_matches_input_on_a_sample_of_sizes(name):
  _output_shapes_match(name, list(range(1, 600, 13)) + [2, 31, 32, 33, 599, 600])


def test_crop_offsets_follow_caffe_coordinate_maps():
  """Derives every crop offset by Caffe's coord_map (docs/reference.md §3)."""
  from fractions import Fraction as F

  # Each blob's coordinates are x_blob = a * x_data + b. A conv/pool layer
  # maps x -> (x + p - (k-1)/2) / s, a deconvolution x -> s*x + (k-1)/2.
  def down(ab, k, s, p):
    a, b = ab
    return a / s, (b + p - F(k - 1, 2)) / s

  def up(ab, k, s):
    a, b = ab
    return a * s, b * s + F(k - 1, 2)

  blob = (F(1), F(0))
  blob = down(blob, 3, 1, 100)
  pools = {}
  for block, (_, depth) in enumerate(models.VGG16_BLOCKS, start=1):
    for _ in range(depth - (1 if block == 1 else 0)):
      blob = down(blob, 3, 1, 1)
    blob = down(blob, 2, 2, 0)
    pools[f"pool{block}"] = blob
  score = down(blob, 7, 1, 0)  # fc6; fc7 and score_fr are 1x1 pass-through
  assert pools["pool3"] == (F(1, 8), F(191, 16))
  assert score == (F(1, 32), F(-25, 64))
  vgg_heads = {n.name: n.head for n in models.NETS.values()
               if n.trunk == "vgg16"}  # CaffeNet's: tests/nets_test.py.
  for name, head in vgg_heads.items():
    current = score
    for skip in head.skips:
      current = up(current, skip.upsampler.kernel, skip.upsampler.stride)
      src_a, src_b = pools[skip.source]
      assert src_a == current[0]
      # The crop offset is the shift between the grids, in blob units.
      assert src_b - current[1] == skip.offset, (name, skip)
    final = up(current, head.final.kernel, head.final.stride)
    assert final[0] == 1 and final[1] == head.final_offset, name


# --------------------------------------------------------------------------
# Bilinear kernels (docs/reference.md §6.2) and the upsampler's alignment
# (docs/reference.md §3).
# --------------------------------------------------------------------------


@pytest.mark.parametrize("size,profile", [
    (4, [0.25, 0.75, 0.75, 0.25]),
    (16, [(2 * m + 1) / 16 for m in range(8)] + [(15 - 2 * m) / 16 for m in range(8)]),
    (32, [(2 * m + 1) / 32 for m in range(16)] + [(31 - 2 * m) / 32 for m in range(16)]),
    (64, [(2 * m + 1) / 64 for m in range(32)] + [(63 - 2 * m) / 64 for m in range(32)]),
    (63, [1 - abs(i - 31) / 32 for i in range(63)]),
])
def test_bilinear_kernel_profiles(size, profile):
  kernel = models.bilinear_kernel(size, 3)
  assert kernel.shape == (size, size, 3, 3)
  profile = np.asarray(profile)
  for c in range(3):
    np.testing.assert_allclose(kernel[:, :, c, c], np.outer(profile, profile),
                               rtol=0, atol=1e-7)
  off_diagonal = kernel.copy()
  off_diagonal[:, :, range(3), range(3)] = 0
  assert not off_diagonal.any()
  stride = (size + 1) // 2
  np.testing.assert_allclose(kernel[:, :, 0, 0].sum(), stride**2, rtol=1e-6)


@pytest.mark.parametrize("kernel,stride", [(4, 2), (16, 8), (32, 16), (64, 32)])
def test_fixed_upsampler_interpolates_a_ramp_linearly(kernel, stride):
  n = 6
  ramp = jnp.broadcast_to(jnp.arange(n, dtype=jnp.float32)[:, None], (n, n))
  x = jnp.stack([ramp, 2 * ramp.T], axis=-1)[None]  # two independent channels
  layer = nn.ConvTranspose(2, (kernel, kernel), (stride, stride),
                                  padding="VALID", use_bias=False)
  variables = {"params": {"kernel": models.bilinear_kernel(kernel, 2)}}
  y = np.asarray(layer.apply(variables, x))[0]
  assert y.shape == (stride * (n - 1) + kernel,) * 2 + (2,)
  half = (kernel - 1) / 2
  # Interior (away from the zero-padded borders): exact linear interpolation
  # with output s*i + (k-1)/2 aligned to input i.
  lo, hi = kernel - 1, stride * (n - 1)
  rows = np.arange(lo, hi + 1)
  expected = (rows - half) / stride
  np.testing.assert_allclose(y[lo:hi + 1, lo:hi + 1, 0],
                             np.broadcast_to(expected[:, None], (len(rows),) * 2),
                             atol=1e-5)
  np.testing.assert_allclose(y[lo:hi + 1, lo:hi + 1, 1],
                             np.broadcast_to(2 * expected[None, :], (len(rows),) * 2),
                             atol=1e-5)


# --------------------------------------------------------------------------
# The whole graph against a NumPy transcription of the Caffe nets.
# --------------------------------------------------------------------------


def _np_conv(x, w_oihw, b, pad):
  """Caffe convolution, stride 1: cross-correlation on a zero-padded input."""
  x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
  k = w_oihw.shape[-1]
  windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(0, 1))
  return np.einsum("hwcij,ocij->hwo", windows, w_oihw) + b


def _np_pool_ceil(x):
  """Caffe MAX pooling 2x2/2 with ceil rounding, by brute force."""
  h, w, c = x.shape
  oh, ow = -(-(h - 2) // 2) + 1, -(-(w - 2) // 2) + 1
  out = np.empty((oh, ow, c))
  for i in range(oh):
    for j in range(ow):
      out[i, j] = x[2 * i:min(2 * i + 2, h), 2 * j:min(2 * j + 2, w)].max((0, 1))
  return out


def _np_deconv(x, w_caffe, stride):
  """Caffe Deconvolution by definition: out[s*i+a, s*j+b, o] += x[i,j,c] W[c,o,a,b]."""
  h, w, _ = x.shape
  _, cout, k, _ = w_caffe.shape
  out = np.zeros((stride * (h - 1) + k, stride * (w - 1) + k, cout))
  for i in range(h):
    for j in range(w):
      out[stride * i:stride * i + k, stride * j:stride * j + k] += np.einsum(
          "c,coab->abo", x[i, j], w_caffe)
  return out


# The reference graphs, as the prototxts spell them (docs/reference.md §2.2).
CAFFE_HEADS = {
    "fcn32s": dict(skips=[], final=("upscore", 64, 32, 19)),
    "fcn16s": dict(skips=[("upscore2", 4, 2, "pool4", "score_pool4", 5, None)],
                   final=("upscore16", 32, 16, 27)),
    "fcn8s": dict(skips=[("upscore2", 4, 2, "pool4", "score_pool4", 5, None),
                         ("upscore_pool4", 4, 2, "pool3", "score_pool3", 9, None)],
                  final=("upscore8", 16, 8, 31)),
    "fcn8s_atonce": dict(
        skips=[("upscore2", 4, 2, "pool4", "score_pool4", 5, "scale_pool4"),
               ("upscore_pool4", 4, 2, "pool3", "score_pool3", 9, "scale_pool3")],
        final=("upscore8", 16, 8, 31)),
}


def _np_fcn(blobs, image, name):
  """Runs the Caffe graph on one HxWx3 image given Caffe-layout blobs."""
  relu = lambda v: np.maximum(v, 0)
  x = image.astype(np.float64)
  acts = {}
  for block, (_, depth) in enumerate(models.VGG16_BLOCKS, start=1):
    for i in range(1, depth + 1):
      layer = f"conv{block}_{i}"
      x = relu(_np_conv(x, *blobs[layer], pad=100 if layer == "conv1_1" else 1))
    x = _np_pool_ceil(x)
    acts[f"pool{block}"] = x
  x = relu(_np_conv(x, *blobs["fc6"], pad=0))
  x = relu(_np_conv(x, *blobs["fc7"], pad=0))
  score = _np_conv(x, *blobs["score_fr"], pad=0)
  head = CAFFE_HEADS[name]
  for up, k, s, source, score_layer, offset, scale in head["skips"]:
    upscored = _np_deconv(score, blobs[up][0], s)
    feat = acts[source]
    if scale:
      feat = feat * blobs[scale][0]
    skip = _np_conv(feat, *blobs[score_layer], pad=0)
    h, w = upscored.shape[:2]
    score = upscored + skip[offset:offset + h, offset:offset + w]
  up, k, s, offset = head["final"]
  full = _np_deconv(score, blobs[up][0], s)
  return full[offset:offset + image.shape[0], offset:offset + image.shape[1]]


def _random_caffe_blobs(model, rng):
  """Random Caffe-layout blobs (OIHW convs, (Cin,Cout,k,k) asymmetric deconvs)."""
  shapes = _param_shapes(model)
  blobs = {}
  for layer, leaves in shapes.items():
    if "scale" in leaves:
      blobs[layer] = [rng.uniform(0.5, 1.5, leaves["scale"].shape)]
      continue
    kh, kw, cin, cout = leaves["kernel"].shape
    if "bias" not in leaves:  # a deconvolution
      blobs[layer] = [rng.normal(0, 1.0 / (kh * kw), (cin, cout, kh, kw))]
    else:
      std = math.sqrt(2.0 / (kh * kw * cin))
      blobs[layer] = [rng.normal(0, std, (cout, cin, kh, kw)),
                      rng.normal(0, 0.1, (cout,))]
  return blobs


def _to_flax(blobs):
  """Caffe blobs -> HWIO; deconvs flipped (docs/reference.md §4.3)."""
  params = {}
  for layer, b in blobs.items():
    if layer.startswith("scale"):
      params[layer] = {"scale": b[0]}
    elif len(b) == 1:
      params[layer] = {"kernel": b[0].transpose(2, 3, 0, 1)[::-1, ::-1]}
    else:
      params[layer] = {"kernel": b[0].transpose(2, 3, 1, 0), "bias": b[1]}
  return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)


@pytest.mark.parametrize("name", ["fcn8s", "fcn8s_atonce", "fcn16s", "fcn32s"])
def test_forward_equals_numpy_caffe_graph(name):
  rng = np.random.default_rng(0)
  model = models.create_model(name, width_divisor=16)
  blobs = _random_caffe_blobs(model, rng)
  image = rng.normal(0, 50, (37, 53, 3))
  expected = _np_fcn(blobs, image, name)
  got = np.asarray(jit_apply(model, {"params": _to_flax(blobs)},
                               jnp.asarray(image[None], jnp.float32)))[0]
  assert got.shape == expected.shape == (37, 53, 21)
  rel = np.abs(got - expected).max() / np.abs(expected).max()
  assert rel < 1e-5, rel


def test_deconvolution_without_flip_would_differ():
  """The flip matters for learned (asymmetric) kernels: guard the test above."""
  rng = np.random.default_rng(1)
  model = models.create_model("fcn32s", width_divisor=16)
  blobs = _random_caffe_blobs(model, rng)
  image = rng.normal(0, 50, (37, 53, 3))
  params = _to_flax(blobs)
  params["upscore"]["kernel"] = jnp.asarray(
      blobs["upscore"][0].transpose(2, 3, 0, 1), jnp.float32)  # no flip
  got = np.asarray(jit_apply(model, {"params": params}, image[None]))[0]
  expected = _np_fcn(blobs, image, "fcn32s")
  assert np.abs(got - expected).max() / np.abs(expected).max() > 1e-2


def test_initial_scores_are_zero():
  model = models.create_model("fcn8s", width_divisor=16)
  variables = models.init_variables(model)
  x = jax.random.normal(jax.random.key(0), (1, 40, 40, 3)) * 50
  # Zero-initialised score layers: the untrained net predicts all zeros.
  assert not np.asarray(jit_apply(model, variables, x)).any()


def test_inverted_dropout_after_fc6_and_fc7_only_in_training():
  model = models.create_model("fcn32s", width_divisor=16)
  params = dict(random_variables(model)["params"])
  width = params["fc7"]["bias"].shape[0]
  # fc7 = identity, so fc7 in training is drop7(drop6(relu(fc6))): each unit is
  # either 0 or (1/0.5)**2 = 4 times its test-time value.
  params["fc7"] = {"kernel": jnp.eye(width)[None, None],
                   "bias": jnp.zeros(width)}
  variables = {"params": params}
  x = jax.random.normal(jax.random.key(0), (1, 40, 40, 3)) * 50

  @functools.partial(jax.jit, static_argnums=0)  # One program, not op by op.
  def fc7_blob(train, key):
    _, state = model.apply(variables, x, train=train, mutable=["intermediates"],
                           rngs={"dropout": key})
    return state["intermediates"]["blobs"][0]["fc7"]

  def fc7(train, key=0):
    return np.asarray(fc7_blob(train, jax.random.key(key)))

  test = fc7(False)
  np.testing.assert_array_equal(test, fc7(False, key=5))  # identity at test
  train = fc7(True)
  active = test > 0
  assert active.sum() > 200
  kept = np.isclose(train[active], 4 * test[active], rtol=1e-5)
  dropped = train[active] == 0
  assert (kept | dropped).all()
  assert 0.15 < kept.mean() < 0.35  # kept by both dropouts: p = 0.25
  assert not np.array_equal(train, fc7(True, key=1))


def test_bfloat16_compute_keeps_float32_params_and_logits():
  model = models.create_model("fcn8s", width_divisor=16, dtype="bfloat16")
  variables = models.init_variables(model)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
  out, state = jit_apply(model, variables, jnp.ones((1, 33, 35, 3)),
                         mutable=["intermediates"])
  assert out.dtype == jnp.float32 and out.shape == (1, 33, 35, 21)
  assert state["intermediates"]["blobs"][0]["fc7"].dtype == jnp.bfloat16


# --------------------------------------------------------------------------
# Convolutionalisation (docs/reference.md §4.5).
# --------------------------------------------------------------------------


def test_convolutionalised_fc_equals_dense_classifier_at_224():
  """Dense VGG16 fc6/fc7 on 224x224 == conv fc6/fc7 at the single output cell."""
  rng = np.random.default_rng(2)
  divisor = 16
  trunk = models.VGG16(width_divisor=divisor, input_pad=1)  # VGG16's own pad
  conv_shapes = _param_shapes(models.create_model("fcn32s", width_divisor=divisor))
  blobs = _random_caffe_blobs(models.create_model("fcn32s", width_divisor=divisor), rng)
  c5 = conv_shapes["conv5_3"]["kernel"].shape[-1]
  fc = conv_shapes["fc7"]["kernel"].shape[-1]
  # Caffe InnerProduct blobs: (out, in) with in = C*7*7 flattened in C order.
  fc6_w = rng.normal(0, math.sqrt(2 / (c5 * 49)), (fc, c5 * 49))
  fc6_b = rng.normal(0, 0.1, fc)
  fc7_w = rng.normal(0, math.sqrt(2 / fc), (fc, fc))
  fc7_b = rng.normal(0, 0.1, fc)
  image = rng.normal(0, 50, (224, 224, 3))

  # Reference: the classifier as Caffe runs it, with dense layers.
  x = image
  for block, (_, depth) in enumerate(models.VGG16_BLOCKS, start=1):
    for i in range(1, depth + 1):
      x = np.maximum(_np_conv(x, *blobs[f"conv{block}_{i}"], pad=1), 0)
    x = _np_pool_ceil(x)
  assert x.shape == (7, 7, c5)
  flat = x.transpose(2, 0, 1).reshape(-1)  # Caffe blobs are C x H x W
  fc7_dense = np.maximum(fc7_w @ np.maximum(fc6_w @ flat + fc6_b, 0) + fc7_b, 0)

  params = {k: v for k, v in _to_flax(blobs).items() if k.startswith("conv")}
  params["fc6"] = {"kernel": models.convolutionalize(fc6_w, c5, 7), "bias": fc6_b}
  params["fc7"] = {"kernel": models.convolutionalize(fc7_w, fc, 1), "bias": fc7_b}
  out = trunk.apply({"params": params}, jnp.asarray(image[None], jnp.float32))
  assert out["fc7"].shape == (1, 1, 1, fc)
  np.testing.assert_allclose(np.asarray(out["fc7"])[0, 0, 0], fc7_dense,
                             rtol=1e-4, atol=1e-4 * np.abs(fc7_dense).max())


def test_convolutionalize_is_the_c_order_reshape():
  w = np.arange(4 * 3 * 2 * 2).reshape(4, 12)
  kernel = models.convolutionalize(w, 3, 2)
  assert kernel.shape == (2, 2, 3, 4)
  for h in range(2):
    for ww in range(2):
      for c in range(3):
        for o in range(4):
          assert kernel[h, ww, c, o] == w[o, c * 4 + h * 2 + ww]
  with pytest.raises(ValueError, match="cannot be convolutionalised"):
    models.convolutionalize(w, 4, 2)
