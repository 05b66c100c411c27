"""The rest of the paper's nets against docs/reference.md: FCN-AlexNet, NYUD
(color, HHA, color-D, color-HHA), SIFT Flow's two heads, PASCAL-Context.

The references are independent of fcn_jax's tables: the §10 parameter counts,
Caffe's coordinate maps over layer tables written out here from §2.3 and the
net.py files, a float64 NumPy transcription of each Caffe graph (strided and
grouped convolution, round-up pooling, LRN and Deconvolution by their
definitions) and real .caffemodel files written with protobuf.
"""

import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models_test  # _np_pool_ceil, _np_deconv (the VGG transcription).
import weights_test  # write_caffemodel: real .caffemodel files.
from fcn_jax import checkpointing
from fcn_jax import default_config
from fcn_jax import models
from fcn_jax import parallel
from fcn_jax import readers
from fcn_jax import run_config
from fcn_jax.data import preprocessing
from fcn_jax.evaluation import evaluator
from fcn_jax.evaluation import metrics
from fcn_jax.inference import inputs as inputs_lib
from fcn_jax.inference import driver as driver_lib
from fcn_jax.inference import predictor as predictor_lib
from fcn_jax.models import weights
from fcn_jax.training import optim
from fcn_jax.training import state as state_lib
from fcn_jax.training import step as step_lib
from tests import helpers
from tests.tiny_fcn import random_variables
from tests.tiny_fcn import tiny_fcn

DIVISOR = 16
NEW_NETS = ("fcn_alexnet", "nyud_fcn32s_color", "nyud_fcn32s_hha",
            "nyud_fcn32s_color_d", "nyud_fcn32s_color_hha", "siftflow_fcn32s",
            "siftflow_fcn16s", "siftflow_fcn8s", "pascalcontext_fcn32s",
            "pascalcontext_fcn16s", "pascalcontext_fcn8s")

# --------------------------------------------------------------------------
# Every net builds with its reference inputs, outputs and §10 counts.
# --------------------------------------------------------------------------

# docs/reference.md §10 (and the table): all parameters, fixed
# upsamplers included.
SPEC_TOTALS = {
    "fcn_alexnet": 58_704_590, "nyud_fcn32s_color": 140_978_024,
    "nyud_fcn32s_hha": 140_978_024, "nyud_fcn32s_color_d": 140_978_600,
    "nyud_fcn32s_color_hha": 275_402_448, "siftflow_fcn32s": 138_905_444,
    "siftflow_fcn16s": 135_568_424, "siftflow_fcn8s": 134_751_980,
    "pascalcontext_fcn32s": 149_251_964, "pascalcontext_fcn16s": 138_281_144,
    "pascalcontext_fcn8s": 135_589_364,
}
# name: (input channels, output classes), from §8.2-§8.4.
SPEC_IO = {
    "fcn_alexnet": ({"image": 3}, {"score": 21}),
    "nyud_fcn32s_color": ({"image": 3}, {"score": 40}),
    "nyud_fcn32s_hha": ({"image": 3}, {"score": 40}),
    "nyud_fcn32s_color_d": ({"image": 4}, {"score": 40}),
    "nyud_fcn32s_color_hha": ({"color": 3, "hha": 3}, {"score": 40}),
    "siftflow_fcn32s": ({"image": 3}, {"sem": 33, "geo": 3}),
    "siftflow_fcn16s": ({"image": 3}, {"sem": 33, "geo": 3}),
    "siftflow_fcn8s": ({"image": 3}, {"sem": 33, "geo": 3}),
    "pascalcontext_fcn32s": ({"image": 3}, {"score": 60}),
    "pascalcontext_fcn16s": ({"image": 3}, {"score": 60}),
    "pascalcontext_fcn8s": ({"image": 3}, {"score": 60}),
}


def _count(tree):
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def test_every_name_has_the_reference_parameter_count():
  assert set(NEW_NETS) | {"fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce"} == set(
      models.MODEL_NAMES)
  for name in NEW_NETS:
    model = models.create_model(name)
    shapes = models.param_shapes(model)
    assert _count(shapes) == SPEC_TOTALS[name], name
    assert list(shapes) == list(model.layer_names()), name
    channels, classes = SPEC_IO[name]
    assert model.input_channels == channels, name
    assert model.head_classes == classes, name
    spec = models.ModelSpec(name)
    assert (spec.input_channels, spec.head_classes) == (channels, classes)
  alexnet = models.create_model("fcn_alexnet")
  shapes = models.param_shapes(alexnet)
  fixed = _count({k: shapes[k] for k in alexnet.frozen_layers()})
  assert (_count(shapes) - fixed, fixed) == (56_954_261, 1_750_329)


def test_reference_layer_names_and_caffe_layouts():
  def shapes(name, **kw):
    return {k: {leaf: v.shape for leaf, v in leaves.items()} for k, leaves in
            models.param_shapes(models.create_model(name, **kw)).items()}

  alexnet = shapes("fcn_alexnet")
  # docs/reference.md §2.3: grouped blobs are (out, in / 2, k, k) in Caffe.
  assert alexnet["conv1"]["kernel"] == (11, 11, 3, 96)
  assert alexnet["conv2"]["kernel"] == (5, 5, 48, 256)
  assert alexnet["conv4"]["kernel"] == (3, 3, 192, 384)
  assert alexnet["conv5"]["kernel"] == (3, 3, 192, 256)
  assert alexnet["fc6"]["kernel"] == (6, 6, 256, 4096)
  assert alexnet["upscore"] == {"kernel": (63, 63, 21, 21)}
  assert list(alexnet) == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6",
                           "fc7", "score_fr", "upscore"]
  color_d = shapes("nyud_fcn32s_color_d")
  assert color_d["conv1_1_bgrd"]["kernel"] == (3, 3, 4, 64)
  assert "conv1_1" not in color_d
  fusion = shapes("nyud_fcn32s_color_hha")
  assert {k for k in fusion if k.endswith("color")} == {
      n + "color" for n in models.TRUNK_LAYERS + ("score_fr",)}
  assert {k for k in fusion if k.endswith("hha")} == {
      n + "hha" for n in models.TRUNK_LAYERS + ("score_fr",)}
  assert fusion["upscore"] == {"kernel": (64, 64, 40, 40)}
  sift = shapes("siftflow_fcn8s")
  assert set(sift) - set(models.TRUNK_LAYERS) == {
      f"{layer}_{head}" for head in ("sem", "geo") for layer in (
          "score_fr", "upscore2", "score_pool4", "upscore_pool4",
          "score_pool3", "upscore8")}
  assert sift["score_pool3_geo"]["kernel"] == (1, 1, 256, 3)
  assert sift["upscore8_sem"] == {"kernel": (16, 16, 33, 33)}
  assert shapes("siftflow_fcn32s")["upscore_geo"] == {
      "kernel": (64, 64, 3, 3)}
  assert set(shapes("siftflow_fcn16s")) - set(models.TRUNK_LAYERS) == {
      f"{layer}_{head}" for head in ("sem", "geo") for layer in (
          "score_fr", "upscore2", "score_pool4", "upscore16")}


def test_num_classes_overrides_the_first_head_only():
  sift = models.create_model("siftflow_fcn16s", 10)
  assert sift.head_classes == {"sem": 10, "geo": 3}
  assert models.create_model("nyud_fcn32s_color", 5).head_classes == {
      "score": 5}
  assert models.ModelSpec("pascalcontext_fcn8s").num_classes == 60


def test_pascalcontext_nets_are_the_voc_graphs_with_60_classes():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(0, 50, (1, 35, 41, 3)), jnp.float32)
  for stride in ("32s", "16s", "8s"):
    context = models.create_model(f"pascalcontext_fcn{stride}",
                                  width_divisor=64)
    voc = models.create_model(f"fcn{stride}", 60, width_divisor=64)
    assert context.layer_names() == voc.layer_names()
    assert context.frozen_layers() == voc.frozen_layers()
  # The whole graph once, at stride 8 (the one with both skips).
  variables = models_test._to_flax(models_test._random_caffe_blobs(voc, rng))
  np.testing.assert_array_equal(context.apply({"params": variables}, x),
                                voc.apply({"params": variables}, x))


def _output_sizes_match(name, sizes):
  model = models.create_model(name, width_divisor=64)
  variables = {"params": models.param_shapes(model)}
  for h in sizes:
    w = 601 - h
    inputs = {n: jax.ShapeDtypeStruct((1, h, w, c), jnp.float32)
              for n, c in model.input_channels.items()}
    out = jax.eval_shape(model.apply, variables, inputs if model.multi_input
                         else next(iter(inputs.values())))
    for head, c in model.head_classes.items():
      assert model.per_head(out)[head].shape == (1, h, w, c), (name, h, w)


def test_alexnet_output_matches_input_for_odd_and_even_sizes():
  # Every size through 64 (two periods of the stride 32), then a sample;
  # each height h is traced with width 601 - h.
  _output_sizes_match("fcn_alexnet", list(range(1, 65)) +
                      list(range(65, 601, 29)) + [599, 600])


@pytest.mark.parametrize("name", [n for n in NEW_NETS if n != "fcn_alexnet"])
def test_output_matches_input_for_odd_and_even_sizes(name):
  _output_sizes_match(name, [1, 2, 31, 32, 33, 300])


def test_inputs_are_checked_against_the_net():
  model = models.create_model("nyud_fcn32s_color_hha", width_divisor=64)
  variables = {"params": models.param_shapes(model)}
  x = jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32)
  with pytest.raises(ValueError, match=r"dict of inputs \['color', 'hha'\]"):
    jax.eval_shape(model.apply, variables, x)
  color_d = models.create_model("nyud_fcn32s_color_d", width_divisor=64)
  with pytest.raises(ValueError, match="4 channels"):
    jax.eval_shape(color_d.apply, {"params": models.param_shapes(color_d)}, x)
  with pytest.raises(ValueError, match=r"heads \['geo', 'sem'\]"):
    models.create_model("siftflow_fcn8s").per_head(np.zeros((1, 2, 2)))


# --------------------------------------------------------------------------
# Geometry: crop offsets from Caffe's coordinate maps (docs/reference.md §3).
# --------------------------------------------------------------------------

# The reference net.py layer sequences: (kind, kernel, stride, pad), with
# ("pool", ...) recording the blob after it. Written out from §2.1 and §2.3.
VGG16_CAFFE = ([("conv", 3, 1, 100), ("conv", 3, 1, 1), ("pool1", 2, 2, 0)]
               + [("conv", 3, 1, 1)] * 2 + [("pool2", 2, 2, 0)]
               + [("conv", 3, 1, 1)] * 3 + [("pool3", 2, 2, 0)]
               + [("conv", 3, 1, 1)] * 3 + [("pool4", 2, 2, 0)]
               + [("conv", 3, 1, 1)] * 3 + [("pool5", 2, 2, 0)]
               + [("fc6", 7, 1, 0), ("fc7", 1, 1, 0)])
CAFFENET_CAFFE = [("conv1", 11, 4, 100), ("pool1", 3, 2, 0), ("conv2", 5, 1, 2),
                  ("pool2", 3, 2, 0), ("conv3", 3, 1, 1), ("conv4", 3, 1, 1),
                  ("conv5", 3, 1, 1), ("pool5", 3, 2, 0), ("fc6", 6, 1, 0),
                  ("fc7", 1, 1, 0)]


def _coordinate_maps(table):
  """``{blob: (a, b)}`` with x_blob = a * x_data + b (Caffe's coord_map)."""
  a, b = Fraction(1), Fraction(0)
  maps = {}
  for kind, k, s, p in table:
    a, b = a / s, (b + p - Fraction(k - 1, 2)) / s
    maps[kind] = (a, b)
  return maps


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_crop_offsets_follow_caffe_coordinate_maps(name):
  net = models.NETS[name]
  maps = _coordinate_maps(CAFFENET_CAFFE if net.trunk == "caffenet"
                          else VGG16_CAFFE)
  score = maps["fc7"]
  for skip in net.head.skips:
    up = skip.upsampler
    score = (score[0] * up.stride,
             score[1] * up.stride + Fraction(up.kernel - 1, 2))
    assert maps[skip.source][0] == score[0]
    assert maps[skip.source][1] - score[1] == skip.offset, (name, skip)
  final = net.head.final
  assert score[0] * final.stride == 1
  offset = score[1] * final.stride + Fraction(final.kernel - 1, 2)
  assert offset == net.head.final_offset, name
  if name == "fcn_alexnet":  # §3: fc6 at -13/32, the final crop at 18.
    assert maps["fc6"] == (Fraction(1, 32), Fraction(-13, 32))
    assert (final.kernel, final.stride, offset) == (63, 32, 18)


# --------------------------------------------------------------------------
# Layers against naive NumPy (docs/reference.md §4.2, §4.11, §2.3).
# --------------------------------------------------------------------------


def _np_lrn(x, size=5, alpha=1e-4, beta=0.75):
  """Caffe's across-channel LRN, one channel at a time."""
  out = np.empty_like(x)
  channels = x.shape[-1]
  for c in range(channels):
    lo, hi = max(0, c - size // 2), min(channels, c + size // 2 + 1)
    scale = 1 + alpha / size * np.sum(x[..., lo:hi] ** 2, axis=-1)
    out[..., c] = x[..., c] / scale ** beta
  return out


def _np_conv(x, w_oihw, b, pad, stride=1, groups=1):
  """Caffe convolution by definition: per output pixel, per group."""
  x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
  cout, cin_g, k, _ = w_oihw.shape
  oh = (x.shape[0] - k) // stride + 1
  ow = (x.shape[1] - k) // stride + 1
  out = np.empty((oh, ow, cout))
  per_group = cout // groups
  for o in range(cout):
    g = o // per_group
    ws = w_oihw[o]  # (cin_g, k, k)
    xs = x[..., g * cin_g:(g + 1) * cin_g]
    windows = np.lib.stride_tricks.sliding_window_view(xs, (k, k), (0, 1))
    windows = windows[::stride, ::stride][:oh, :ow]  # (oh, ow, cin_g, k, k)
    out[..., o] = np.einsum("hwcij,cij->hw", windows, ws) + b[o]
  return out


def _np_pool(x, window, stride):
  """Caffe MAX pooling with round-up output size, by brute force."""
  h, w, c = x.shape
  oh = -(-(h - window) // stride) + 1
  ow = -(-(w - window) // stride) + 1
  out = np.empty((oh, ow, c))
  for i in range(oh):
    for j in range(ow):
      out[i, j] = x[i * stride:min(i * stride + window, h),
                    j * stride:min(j * stride + window, w)].max((0, 1))
  return out


def test_lrn_matches_caffe_definition():
  rng = np.random.default_rng(0)
  x = rng.normal(0, 30, (2, 3, 4, 7))  # Large values: the scale matters.
  got = np.asarray(models.local_response_norm(jnp.asarray(x, jnp.float32), 5,
                                              1e-4, 0.75))
  want = _np_lrn(x)
  assert np.abs(want - x).max() > 0.1  # The normalisation is not a no-op.
  np.testing.assert_allclose(got, want, rtol=2e-5)


def test_grouped_strided_conv_and_3x3_pool_match_caffe_definitions():
  rng = np.random.default_rng(1)
  x = rng.normal(0, 1, (23, 18, 4))
  w = rng.normal(0, 1, (6, 2, 5, 5))  # 2 groups: (out, in / 2, k, k)
  b = rng.normal(0, 1, 6)
  conv = models.caffe_conv(6, 5, 3, "c", jnp.float32, stride=2, groups=2)
  params = {"params": {"kernel": jnp.asarray(w.transpose(2, 3, 1, 0),
                                             jnp.float32),
                       "bias": jnp.asarray(b, jnp.float32)}}
  got = np.asarray(conv.apply(params, jnp.asarray(x[None], jnp.float32)))[0]
  want = _np_conv(x, w, b, pad=3, stride=2, groups=2)
  assert got.shape == want.shape == (13, 10, 6)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # Output half 1 does not read input half 0.
  x2 = x.copy()
  x2[..., :2] += 1.0
  moved = np.asarray(conv.apply(params, jnp.asarray(x2[None],
                                                    jnp.float32)))[0]
  np.testing.assert_allclose(moved[..., 3:], got[..., 3:], rtol=1e-6)
  assert not np.allclose(moved[..., :3], got[..., :3])
  for size in [(7, 7), (8, 9), (13, 4), (3, 3)]:
    y = rng.normal(0, 1, size + (2,)).astype(np.float32)
    pooled = np.asarray(models.max_pool_ceil(jnp.asarray(y[None]), 3, 2))[0]
    np.testing.assert_array_equal(pooled, _np_pool(y, 3, 2))


# --------------------------------------------------------------------------
# Whole nets against a NumPy transcription of the reference graphs.
# --------------------------------------------------------------------------

# Per reference head: skips (upsampler, k, s, pool, score layer, offset) and
# the final (upsampler, k, s, offset), from the net.py files.
CAFFE_HEADS = {
    "32s": dict(skips=[], final=("upscore", 64, 32, 19)),
    "16s": dict(skips=[("upscore2", 4, 2, "pool4", "score_pool4", 5)],
                final=("upscore16", 32, 16, 27)),
    "8s": dict(skips=[("upscore2", 4, 2, "pool4", "score_pool4", 5),
                      ("upscore_pool4", 4, 2, "pool3", "score_pool3", 9)],
               final=("upscore8", 16, 8, 31)),
}


def _np_vgg(blobs, x, suffix="", first="conv1_1"):
  relu = lambda v: np.maximum(v, 0)
  acts = {}
  for block, (_, depth) in enumerate(models.VGG16_BLOCKS, 1):
    for i in range(1, depth + 1):
      name = first if (block, i) == (1, 1) else f"conv{block}_{i}"
      x = relu(_np_conv(x, *blobs[name + suffix],
                        pad=100 if (block, i) == (1, 1) else 1))
    x = _np_pool(x, 2, 2)
    acts[f"pool{block}"] = x
  x = relu(_np_conv(x, *blobs["fc6" + suffix], pad=0))
  acts["fc7"] = relu(_np_conv(x, *blobs["fc7" + suffix], pad=0))
  return acts


def _np_caffenet(blobs, x):
  relu = lambda v: np.maximum(v, 0)
  x = relu(_np_conv(x, *blobs["conv1"], pad=100, stride=4))
  x = _np_lrn(_np_pool(x, 3, 2))
  x = relu(_np_conv(x, *blobs["conv2"], pad=2, groups=2))
  x = _np_lrn(_np_pool(x, 3, 2))
  x = relu(_np_conv(x, *blobs["conv3"], pad=1))
  x = relu(_np_conv(x, *blobs["conv4"], pad=1, groups=2))
  x = relu(_np_conv(x, *blobs["conv5"], pad=1, groups=2))
  x = _np_pool(x, 3, 2)
  x = relu(_np_conv(x, *blobs["fc6"], pad=0))
  return {"fc7": relu(_np_conv(x, *blobs["fc7"], pad=0))}


def _np_head(blobs, acts, score, head, suffix, size):
  for up, _, s, pool, layer, offset in head["skips"]:
    upscored = models_test._np_deconv(score, blobs[up + suffix][0], s)
    skip = _np_conv(acts[pool], *blobs[layer + suffix], pad=0)
    h, w = upscored.shape[:2]
    score = upscored + skip[offset:offset + h, offset:offset + w]
  up, _, s, offset = head["final"]
  full = models_test._np_deconv(score, blobs[up + suffix][0], s)
  return full[offset:offset + size[0], offset:offset + size[1]]


def _np_net(name, blobs, inputs):
  """The reference graph of ``name`` on one example (HxWxC arrays)."""
  if name == "fcn_alexnet":
    x = inputs["image"]
    acts = _np_caffenet(blobs, x)
    score = _np_conv(acts["fc7"], *blobs["score_fr"], pad=0)
    return {"score": _np_head(blobs, acts, score,
                              dict(skips=[], final=("upscore", 63, 32, 18)),
                              "", x.shape[:2])}
  if name == "nyud_fcn32s_color_hha":  # score_fused: 0.5 / 0.5 (§8.2).
    scores = [_np_conv(_np_vgg(blobs, inputs[m], m)["fc7"],
                       *blobs["score_fr" + m], pad=0) for m in ("color", "hha")]
    fused = 0.5 * scores[0] + 0.5 * scores[1]
    return {"score": _np_head(blobs, {}, fused, CAFFE_HEADS["32s"], "",
                              inputs["color"].shape[:2])}
  x = inputs["image"]
  acts = _np_vgg(blobs, x, first="conv1_1_bgrd" if name.endswith("_d")
                 else "conv1_1")
  head = CAFFE_HEADS[next(s for s in CAFFE_HEADS if f"fcn{s}" in name)]
  if name.startswith("siftflow"):  # Two complete heads (§8.3).
    return {h: _np_head(blobs, acts, _np_conv(acts["fc7"],
                                              *blobs["score_fr_" + h], pad=0),
                        head, "_" + h, x.shape[:2]) for h in ("sem", "geo")}
  score = _np_conv(acts["fc7"], *blobs["score_fr"], pad=0)
  return {"score": _np_head(blobs, acts, score, head, "", x.shape[:2])}


def _inputs(model, rng, height=21, width=26):
  return {n: rng.normal(0, 50, (height, width, c))
          for n, c in model.input_channels.items()}


def _apply(model, params, inputs):
  batch = {n: jnp.asarray(x[None], jnp.float32) for n, x in inputs.items()}
  out = helpers.jit_apply(model, {"params": params}, batch if model.multi_input
                    else next(iter(batch.values())))
  return {h: np.asarray(v)[0] for h, v in model.per_head(out).items()}


@pytest.mark.parametrize("name", ["fcn_alexnet", "nyud_fcn32s_color_d",
                                  "nyud_fcn32s_color_hha", "siftflow_fcn8s"])
def test_forward_equals_numpy_caffe_graph(name, tmp_path):
  """Real .caffemodel blobs -> from_caffe_layers -> forward == NumPy graph."""
  rng = np.random.default_rng(0)
  model = models.create_model(name, width_divisor=DIVISOR)
  blobs = models_test._random_caffe_blobs(model, rng)
  path = weights_test.write_caffemodel(tmp_path / f"{name}.caffemodel",
                                       weights_test.as_inner_product(
                                           blobs, [k for k in blobs
                                                   if k.startswith("fc")]))
  layers = readers.read_caffemodel(str(path))
  params, report = weights.from_caffe_layers(
      layers, name, width_divisor=DIVISOR, return_report=True)
  assert report.loaded == list(model.layer_names()) and not report.unused
  inputs = _inputs(model, rng)
  got = _apply(model, params, inputs)
  want = _np_net(name, blobs, inputs)
  assert set(got) == set(want) == set(model.head_classes)
  for head, value in want.items():
    assert got[head].shape == value.shape == (
        21, 26, model.head_classes[head])
    assert np.abs(value).max() > 0
    rel = np.abs(got[head] - value).max() / np.abs(value).max()
    assert rel < 1e-5, (head, rel)


# --------------------------------------------------------------------------
# Weights: every net from a real .caffemodel, base nets, staged init.
# --------------------------------------------------------------------------

LOAD_DIVISOR = 64


def _check_blobs_in_place(params, blobs):
  for layer, layer_blobs in blobs.items():
    got = params[layer]
    if "scale" in got:
      continue
    want = layer_blobs[0]
    if "bias" in got:  # Convolution OIHW (grouped: (out, in / g, k, k)).
      np.testing.assert_array_equal(
          got["kernel"], want.transpose(2, 3, 1, 0).astype(np.float32))
      np.testing.assert_array_equal(got["bias"],
                                    layer_blobs[1].astype(np.float32))
    else:  # Deconvolution (C_in, C_out, k, k), flipped.
      np.testing.assert_array_equal(
          got["kernel"],
          want.transpose(2, 3, 0, 1)[::-1, ::-1].astype(np.float32))


def test_every_net_loads_a_caffemodel_under_the_reference_names(tmp_path):
  rng = np.random.default_rng(1)
  for name in NEW_NETS:
    # Few classes keep the dense upsampler blobs (k, k, C, C) small.
    model = models.create_model(name, 4, width_divisor=LOAD_DIVISOR)
    blobs = models_test._random_caffe_blobs(model, rng)
    path = weights_test.write_caffemodel(tmp_path / f"{name}.caffemodel",
                                         blobs)
    layers = readers.read_caffemodel(str(path))
    assert name in weights.guess_model(layers).split(" or ")
    params = weights.from_caffe_layers(layers, name, 4,
                                       width_divisor=LOAD_DIVISOR)
    _check_blobs_in_place(params, blobs)


@pytest.mark.parametrize("name", ["siftflow_fcn8s", "nyud_fcn32s_color_hha"])
def test_released_caffemodel_converts_to_a_loadable_export(name, tmp_path):
  """The CLI on a released file name; the export rebuilds its model, with
  per-head class names and the data layer's colour preprocessing (§8)."""
  model = models.create_model(name, width_divisor=LOAD_DIVISOR)
  blobs = models_test._random_caffe_blobs(model, np.random.default_rng(6))
  path = weights_test.write_caffemodel(
      tmp_path / models.NETS[name].released, blobs)
  assert weights_test.run_cli(
      "--input", path, "--format", "caffemodel", "--model", name,
      "--output", tmp_path / "out", "--width_divisor", LOAD_DIVISOR) == 0
  loaded = checkpointing.load(str(tmp_path / "out"))
  assert loaded.spec.name == name
  assert loaded.spec.head_classes == SPEC_IO[name][1]
  _check_blobs_in_place(loaded.params, blobs)
  assert loaded.preprocessing.name == models.NETS[name].preprocessing
  if name.startswith("siftflow"):
    assert {h: len(v) for h, v in loaded.class_names.items()} == {
        "sem": 33, "geo": 3}
  else:
    assert len(loaded.class_names) == 40


def test_released_file_name_picks_the_model(tmp_path, capsys):
  blobs = models_test._random_caffe_blobs(
      models.create_model("nyud_fcn32s_color", width_divisor=LOAD_DIVISOR),
      np.random.default_rng(2))
  path = weights_test.write_caffemodel(
      tmp_path / "nyud-fcn32s-color-heavy.caffemodel", blobs)
  assert weights_test.run_cli(
      "--input", path, "--format", "caffemodel", "--model", "fcn32s",
      "--output", tmp_path / "out", "--width_divisor", LOAD_DIVISOR) == 2
  assert "use --model nyud_fcn32s_color" in capsys.readouterr().err


def test_caffenet_is_the_trunk_of_fcn_alexnet(tmp_path):
  """bvlc_reference_caffenet: fc6/fc7 InnerProduct convolutionalised (§4.5),
  fc8 unused, the head started as Caffe starts it."""
  model = models.create_model("fcn_alexnet", width_divisor=DIVISOR)
  blobs = {k: v for k, v in models_test._random_caffe_blobs(
      model, np.random.default_rng(3)).items() if k in models.CAFFENET_LAYERS}
  width = blobs["fc7"][0].shape[0]
  blobs["fc8"] = [np.ones((10, width)), np.zeros(10)]
  dense = weights_test.as_inner_product(blobs, ("fc6", "fc7", "fc8"))
  assert dense["fc6"][0].shape == (width, blobs["conv5"][0].shape[0] * 36)
  path = weights_test.write_caffemodel(
      tmp_path / "bvlc_reference_caffenet.caffemodel", dense, v1=True)
  layers = readers.read_caffemodel(str(path))
  assert weights.guess_model(layers) == "caffenet"
  params, report = weights.from_caffe_layers(
      layers, "fcn_alexnet", width_divisor=DIVISOR, return_report=True)
  np.testing.assert_array_equal(
      params["fc6"]["kernel"],
      blobs["fc6"][0].transpose(2, 3, 1, 0).astype(np.float32))
  assert report.unused == ["fc8"]
  assert report.missing == {"score_fr": "zeros", "upscore": "bilinear"}
  # The 63x63 bilinear kernel (§6.2): 1 - |i - 31| / 32, on the diagonal.
  profile = 1 - np.abs(np.arange(63) - 31) / 32
  np.testing.assert_allclose(params["upscore"]["kernel"][:, :, 4, 4],
                             np.outer(profile, profile), atol=1e-7)
  with pytest.raises(weights.WeightsError,
                     match="is a caffenet base net.*--model fcn_alexnet"):
    weights.from_caffe_layers(layers, "fcn32s", width_divisor=DIVISOR)


def _color_d_reference(conv1_1):
  """solve.py of nyud-fcn32s-color-d on Caffe blobs (out, in, k, k)."""
  w, b = conv1_1
  bgrd = np.zeros((w.shape[0], 4) + w.shape[2:])
  bgrd[:, :3] = w
  bgrd[:, 3] = np.mean(w, axis=1)
  return bgrd, b


def test_color_d_conv1_1_bgrd_from_vgg16(tmp_path):
  blobs = weights_test.vgg16_blobs(seed=4)
  path = weights_test.write_caffemodel(tmp_path / "vgg16.caffemodel", blobs)
  layers = readers.read_caffemodel(str(path))
  params, report = weights.from_caffe_layers(
      layers, "nyud_fcn32s_color_d", width_divisor=DIVISOR,
      return_report=True)
  w, b = _color_d_reference([x.astype(np.float32)
                             for x in blobs["conv1_1"]])
  # (The file holds float32 values; the mean is float32 arithmetic.)
  np.testing.assert_allclose(params["conv1_1_bgrd"]["kernel"],
                             w.transpose(2, 3, 1, 0), rtol=1e-5, atol=1e-8)
  np.testing.assert_array_equal(params["conv1_1_bgrd"]["bias"],
                                b.astype(np.float32))
  assert "conv1_1_bgrd" in report.loaded and report.unused == ["fc8"]
  # The same rule when training starts from a VGG16 export made for FCN-32s
  # (21 classes), as the configs do: its made-up head is not copied.
  assert weights_test.run_cli(
      "--input", path, "--format", "caffemodel", "--model", "fcn32s",
      "--output", tmp_path / "vgg16_caffe", "--width_divisor", DIVISOR) == 0
  config = default_config.get_config()
  # (Few classes: a 40-class upsampler is a 26 MB constant to compile.)
  config.model.name, config.model.num_classes = "nyud_fcn32s_color_d", 4
  config.model.width_divisor = DIVISOR
  config.init_from = str(tmp_path / "vgg16_caffe")
  model = run_config.model_spec(config).create()
  params, metadata = state_lib.initial_params(
      model, jax.random.key(0), {"": config.init_from}, "he_normal")
  np.testing.assert_allclose(params["conv1_1_bgrd"]["kernel"],
                             w.transpose(2, 3, 1, 0), rtol=1e-5, atol=1e-8)
  assert not np.asarray(params["score_fr"]["kernel"]).any()
  np.testing.assert_array_equal(params["upscore"]["kernel"],
                                models.bilinear_kernel(64, 4))
  assert metadata["model"] == "fcn32s"


def test_color_hha_streams_start_from_the_color_and_hha_nets():
  """surgery.transplant(suffix) into each stream; upscore stays bilinear."""
  rng = np.random.default_rng(5)
  nets = {m: models_test._to_flax(models_test._random_caffe_blobs(
      models.create_model(f"nyud_fcn32s_{m}", 4, width_divisor=LOAD_DIVISOR),
      rng)) for m in ("color", "hha")}
  model = models.create_model("nyud_fcn32s_color_hha", 4,
                              width_divisor=LOAD_DIVISOR)
  params = {layer: model.reference_init(
      layer, {k: v.shape for k, v in leaves.items()})[0]
            for layer, leaves in models.param_shapes(model).items()}
  initial_upscore = params["upscore"]["kernel"]
  for suffix in ("color", "hha"):
    params, report = weights.copy_by_name(nets[suffix], params, suffix=suffix)
    assert report.loaded == [n for n in model.layer_names()
                             if n.endswith(suffix)]
    assert report.unused == ["upscore" + suffix]  # The stream's own upscore.
  for layer, leaves in params.items():
    if layer == "upscore":
      np.testing.assert_array_equal(leaves["kernel"], initial_upscore)
      continue
    suffix = "color" if layer.endswith("color") else "hha"
    source = nets[suffix][layer[:-len(suffix)]]
    for leaf, value in leaves.items():
      np.testing.assert_array_equal(value, source[leaf])
  np.testing.assert_array_equal(initial_upscore, models.bilinear_kernel(64, 4))


def test_init_from_names_one_source_per_stream():
  spec = models.ModelSpec("nyud_fcn32s_color_hha")
  assert run_config.init_sources("color=a/b, hha=c", spec) == {"color": "a/b",
                                                         "hha": "c"}
  assert run_config.init_sources("runs/x", spec) == {"": "runs/x"}
  assert run_config.init_sources("", spec) == {}
  for bad in ("rgb=a,hha=b", "color=a,color=b", "color="):
    with pytest.raises(ValueError, match="STREAM=PATH per stream"):
      run_config.init_sources(bad, spec)
  with pytest.raises(ValueError, match="none, it has one trunk"):
    run_config.init_sources("color=a", models.ModelSpec("fcn32s"))


# --------------------------------------------------------------------------
# Training: a few steps of a tiny net of each family.
# --------------------------------------------------------------------------

TRAIN_SIZE = 24


def _train_setup(name, num_classes=4, **optim_overrides):
  config = default_config.get_config()
  config.model.name = name
  config.model.num_classes = num_classes
  config.model.width_divisor = 64
  config.model.dropout_rate = 0.0
  config.batch_size = 2
  config.optim.base_lr = 1e-3
  config.optim.momentum = 0.9
  if models.NETS[name].multi_head:  # SIFT Flow: the reference's features.
    config.dataset.label_features = {"sem": "semantic_mask",
                                     "geo": "geometric_mask"}
  for key, value in optim_overrides.items():
    setattr(config.optim, key, value)
  run_config.validate_config(config)
  model = run_config.model_spec(config).create()
  # Flax's default init in distribution (LeCun normal, zero biases), without
  # compiling it for each net.
  params = jax.tree.map(np.asarray, random_variables(
      model, kernel_gain=1.0, bias_std=0.0)["params"])
  tx = optim.create_model_optimizer(config.optim, params, model, 10)
  devices = jax.local_devices()[:1]
  step = step_lib.make_train_fn(model, tx, helpers.resolved(config), devices,
                                donate_state=False)
  state = parallel.replicate(
      state_lib.create_train_state(params, tx, jax.random.key(1)), devices)
  return config, model, params, step, state


def _batch(model, seed=0):
  rng = np.random.default_rng(seed)
  shape = (2, TRAIN_SIZE, TRAIN_SIZE)
  images = {n: rng.normal(0, 40, shape + (c,)).astype(np.float32)
            for n, c in model.input_channels.items()}
  labels = {}
  for h, c in model.head_classes.items():
    labels[h] = rng.integers(0, c, shape).astype(np.int32)
    labels[h][rng.random(shape) < 0.2] = 255
  return {"image": images if model.multi_input else images["image"],
          "label": labels if model.multi_head else labels["score"]}


def _np_head_loss(logits, labels):
  """Softmax cross-entropy averaged over the non-255 pixels (``valid``)."""
  logits = np.asarray(logits, np.float64)
  log_p = logits - logits.max(-1, keepdims=True)
  log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
  valid = labels != 255
  picked = np.take_along_axis(log_p, np.where(valid, labels, 0)[..., None],
                              -1)[..., 0]
  return -(picked * valid).sum() / valid.sum()


@pytest.mark.parametrize("name", ["fcn_alexnet", "nyud_fcn32s_color_hha",
                                  "siftflow_fcn16s", "pascalcontext_fcn32s"])
def test_a_tiny_net_of_each_family_trains(name):
  config, model, params, step, state = _train_setup(
      name, loss_normalization="valid", momentum=0.0, base_lr=1e-3)
  # Random score layers, so that the loss has a gradient everywhere.
  rng = np.random.default_rng(7)
  for layer in model.score_layers():
    params[layer] = jax.tree.map(
        lambda x: rng.normal(0, 0.01, x.shape).astype(np.float32),
        params[layer])
  state = state.replace(params=jax.tree.map(jnp.asarray, params))
  batch = _batch(model)
  logits = model.per_head(helpers.jit_apply(model, {"params": params}, batch["image"]))
  labels = model.per_head(batch["label"])
  # SIFT Flow: the sum of the two losses, each normalised on its own, weight
  # 1 each (§8.3; the reference's are unnormalised, "sum", the same sum).
  want = sum(_np_head_loss(logits[h], labels[h]) for h in logits)
  losses = []
  for _ in range(3):
    state, metrics = step(state, parallel.shard(batch, 1))
    losses.append(float(metrics["loss"]))
  np.testing.assert_allclose(losses[0], want, rtol=1e-5)
  if model.multi_head:
    np.testing.assert_allclose(
        float(metrics["sem_loss"]) + float(metrics["geo_loss"]), losses[-1],
        rtol=1e-6)
  final = parallel.to_host(state.params)
  for layer in model.frozen_layers():
    np.testing.assert_array_equal(final[layer]["kernel"],
                                  params[layer]["kernel"])
  moved = [layer for layer in params
           if not np.array_equal(final[layer]["kernel"],
                                 params[layer]["kernel"])]
  assert set(moved) == set(params) - set(model.frozen_layers())
  assert losses[-1] < losses[0]


def test_fcn32s_fixed_trains_only_the_classifier():
  """CVPR Table 2's FCN-32s-fixed: config.optim.trainable = "score"."""
  _, model, params, step, state = _train_setup("fcn32s", trainable="score")
  batch = _batch(model)
  for _ in range(2):
    state, _ = step(state, parallel.shard(batch, 1))
  final = parallel.to_host(state.params)
  for layer, leaves in params.items():
    for leaf, value in leaves.items():
      same = np.array_equal(final[layer][leaf], value)
      assert same == (layer != "score_fr"), (layer, leaf)
  with pytest.raises(ValueError, match="trainable must be one of"):
    _train_setup("fcn32s", trainable="trunk")


def test_alexnet_trunk_biases_keep_caffes_default_multipliers():
  """§2.3: CaffeNet's convolutions have no param entries (lr 1, decay 1 for
  the biases too); score_fr's bias has 2 / 0."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  model = models.create_model("fcn_alexnet", 4, width_divisor=64)
  shapes = models.param_shapes(model)
  params = jax.tree.map(lambda s: np.ones(s.shape, np.float32), shapes)
  config = ml_collections.ConfigDict(dict(
      base_lr=0.1, momentum=0.0, weight_decay=0.5, bias_lr_mult=2.0,
      bias_decay_mult=0.0, schedule="fixed", warmup_steps=0,
      end_lr_factor=0.0, poly_power=0.9, iter_size=1,
      loss_normalization="valid", loss_sampling_p=1.0, class_weights=(),
      trainable="all"))
  tx = optim.create_model_optimizer(config, params, model, 1)
  grads = jax.tree.map(lambda x: np.full(x.shape, 0.25, np.float32), params)
  updates, _ = tx.update(grads, tx.init(params), params)
  # Caffe: w -= lr * mult * (g + decay * decay_mult * w).
  np.testing.assert_allclose(updates["conv3"]["bias"], -0.1 * (0.25 + 0.5))
  np.testing.assert_allclose(updates["conv3"]["kernel"], -0.1 * (0.25 + 0.5))
  np.testing.assert_allclose(updates["score_fr"]["bias"], -0.2 * 0.25)
  assert not np.asarray(updates["upscore"]["kernel"]).any()
  vgg = models.create_model("fcn32s", 4, width_divisor=64)
  assert vgg.default_bias_multiplier_layers() == ()


def test_multi_head_class_weights_are_rejected():
  with pytest.raises(ValueError, match="weighs one head's classes"):
    _train_setup("siftflow_fcn32s", class_weights=(1.0,) * 4)


# --------------------------------------------------------------------------
# Evaluation and prediction per head, inputs from matching files.
# --------------------------------------------------------------------------


def test_evaluate_reports_every_head_of_sift_flow():
  model, variables = tiny_fcn("siftflow_fcn32s", width_divisor=64,
                              num_classes=4)
  config = default_config.get_config()
  p_eval, devices = evaluator.make_eval_fn(model, helpers.resolved(config))
  batches = [_batch(model, seed) for seed in range(2)]
  for batch in batches:  # One image per batch (eval_batch_size 1).
    batch["image"] = batch["image"][:1]
    batch["label"] = {h: v[:1] for h, v in batch["label"].items()}
  results, _ = evaluator.evaluate(p_eval, devices, variables["params"], batches,
                              num_classes=evaluator.eval_classes(model))
  for head, c in model.head_classes.items():
    hist = np.zeros((c, c), np.int64)
    for batch in batches:
      logits = model.per_head(helpers.jit_apply(model, variables, batch["image"]))[head]
      label = batch["label"][head]
      valid = label != 255
      np.add.at(hist, (label[valid], np.asarray(logits).argmax(-1)[valid]), 1)
    assert results["heads"][head]["confusion_matrix"] == hist.tolist()
    np.testing.assert_allclose(results["heads"][head]["pixel_acc"],
                               np.trace(hist) / hist.sum())
  # The sem head's metrics at the top level (checkpoint ranking, reports).
  assert results["mean_iu"] == results["heads"]["sem"]["mean_iu"]
  report = metrics.format_report(results)
  assert "head sem:" in report and "head geo:" in report


def _write_png(path, array):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  Image.fromarray(array).save(path)


def test_predict_writes_one_png_per_head(tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from tests.tiny_fcn import random_image  # pylint: disable=g-import-not-at-top
  model, variables = tiny_fcn("siftflow_fcn8s", width_divisor=64,
                              num_classes=4)
  rng = np.random.default_rng(0)
  (tmp_path / "in").mkdir()
  image = random_image(rng, 30, 41)
  _write_png(tmp_path / "in" / "coast.png", image)
  predictor = predictor_lib.Predictor(model, variables, preprocessing.SIFT_FLOW,
                                  mode="exact")
  names = {"sem": [f"s{i}" for i in range(4)], "geo": ["sky", "h", "v"]}
  summary = driver_lib.run(predictor,
                           inputs_lib.find_inputs([str(tmp_path / "in")]),
                           tmp_path / "out", names, save_logits=True,
                           progress=False)
  assert summary.num_images == 1 and not summary.failures
  want = model.per_head(helpers.jit_apply(model, variables, jnp.asarray(
      preprocessing.SIFT_FLOW(image)[None])))
  saved = np.load(tmp_path / "out" / "coast.npz")
  for head in ("sem", "geo"):
    with Image.open(tmp_path / "out" / f"coast_{head}.png") as png:
      np.testing.assert_array_equal(np.asarray(png),
                                    np.asarray(want[head])[0].argmax(-1))
    assert (tmp_path / "out" / f"coast_{head}_overlay.jpg").is_file()
    assert saved[f"logits_{head}"].shape == (30, 41, model.head_classes[head])
  assert not (tmp_path / "out" / "coast.png").exists()


def test_predict_reads_hha_and_depth_from_matching_files(tmp_path):
  from tests.tiny_fcn import random_image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  for folder in ("images", "hha", "depth"):
    (tmp_path / folder).mkdir()
  color = {n: random_image(rng, 26, 33) for n in ("img_1", "img_2", "img_3")}
  hha = {n: random_image(rng, 26, 33) for n in ("img_1", "img_2")}
  depth = {n: rng.integers(500, 9000, (26, 33)).astype(np.uint16)
           for n in ("img_1", "img_3")}
  depth["img_3"][0, 0] = 0  # A hole: log(0) is not an input.
  for n in color:
    _write_png(tmp_path / "images" / f"{n}.png", color[n])
  for n in hha:
    _write_png(tmp_path / "hha" / f"{n}.png", hha[n])
  for n in depth:
    _write_png(tmp_path / "depth" / f"{n}.png", depth[n])
  paths = inputs_lib.find_inputs([str(tmp_path / "images")])

  model, variables = tiny_fcn("nyud_fcn32s_color_hha", width_divisor=64,
                              num_classes=4)
  predictor = predictor_lib.Predictor(model, variables, preprocessing.NYUD,
                                  mode="exact")
  extras = inputs_lib.check_extra_inputs(predictor, "nyud_fcn32s_color_hha",
                                         {"hha": str(tmp_path / "hha")})
  summary = driver_lib.run(predictor, paths, tmp_path / "out_hha", ["c"] * 4,
                           save_logits=True, progress=False,
                           extra_inputs=extras)
  assert summary.num_images == 2
  assert [(p.split("/")[-1], "no img_3" in m) for p, m in summary.failures
          ] == [("img_3.png", True)]
  logits = np.load(tmp_path / "out_hha" / "img_1.npz")["logits"]
  want = helpers.jit_apply(model, variables, {
      "color": jnp.asarray(preprocessing.NYUD(color["img_1"])[None]),
      "hha": jnp.asarray(preprocessing.NYUD_HHA(hha["img_1"])[None])})
  np.testing.assert_allclose(logits, np.asarray(want)[0], rtol=1e-2,
                             atol=1e-2 * np.abs(want).max())  # float16

  model, variables = tiny_fcn("nyud_fcn32s_color_d", width_divisor=64,
                              num_classes=4)
  predictor = predictor_lib.Predictor(model, variables, preprocessing.NYUD,
                                  mode="exact")
  summary = driver_lib.run(
      predictor, paths, tmp_path / "out_d", ["c"] * 4, save_logits=True,
      progress=False,
      extra_inputs={"depth": str(tmp_path / "depth" / "{name}.png")})
  assert summary.num_images == 1
  assert sorted(p.split("/")[-1] for p, _ in summary.failures) == [
      "img_2.png", "img_3.png"]
  assert "<= 0" in dict(summary.failures)[str(paths[2])]
  # Input: BGR minus the NYUD mean, then log(depth) - 7.844 (§8.2).
  stacked = np.concatenate([preprocessing.NYUD(color["img_1"]),
                            np.log(depth["img_1"].astype(np.float64)
                                   )[..., None] - 7.844], -1)
  want = helpers.jit_apply(model, variables, jnp.asarray(stacked[None], jnp.float32))
  np.testing.assert_allclose(
      np.load(tmp_path / "out_d" / "img_1.npz")["logits"], np.asarray(want)[0],
      rtol=1e-2, atol=1e-2 * np.abs(want).max())

  with pytest.raises(inputs_lib.InputError, match="pass --depth FOLDER"):
    inputs_lib.check_extra_inputs(predictor, "nyud_fcn32s_color_d", {})
  with pytest.raises(inputs_lib.InputError, match="does not read hha"):
    inputs_lib.check_extra_inputs(
        predictor, "nyud_fcn32s_color_d",
        {"hha": str(tmp_path), "depth": str(tmp_path)})


# --------------------------------------------------------------------------
# One config per reference solver (docs/reference.md §5.1).
# --------------------------------------------------------------------------

# config: (model, base_lr, momentum, iter_size, loss normalisation, dataset,
# train split, eval split, updates).
SOLVERS = {
    "voc_fcn_alexnet": ("fcn_alexnet", 1e-4, 0.9, 20, "valid", "voc_seg",
                        "sbd_train", "seg11valid", 100_000),
    "voc_fcn32s_fixed": ("fcn32s", 1e-10, 0.99, 1, "sum", "voc_seg",
                         "sbd_train", "seg11valid", 100_000),
    "nyud_fcn32s_color": ("nyud_fcn32s_color", 1e-10, 0.99, 1, "sum",
                          "nyud", "trainval", "test", 100_000),
    "nyud_fcn32s_hha": ("nyud_fcn32s_hha", 1e-10, 0.99, 1, "sum", "nyud",
                        "trainval", "test", 100_000),
    "nyud_fcn32s_color_d": ("nyud_fcn32s_color_d", 1e-10, 0.99, 1, "sum",
                            "nyud", "trainval", "test", 100_000),
    "nyud_fcn32s_color_hha": ("nyud_fcn32s_color_hha", 1e-12, 0.99, 1, "sum",
                              "nyud", "trainval", "test", 100_000),
    "siftflow_fcn32s": ("siftflow_fcn32s", 1e-10, 0.99, 1, "sum",
                        "sift_flow", "trainval", "test", 100_000),
    "siftflow_fcn16s": ("siftflow_fcn16s", 1e-12, 0.99, 1, "sum",
                        "sift_flow", "trainval", "test", 100_000),
    "siftflow_fcn8s": ("siftflow_fcn8s", 1e-12, 0.99, 1, "sum", "sift_flow",
                       "trainval", "test", 100_000),
    "pascalcontext_fcn32s": ("pascalcontext_fcn32s", 1e-10, 0.99, 1, "sum",
                             "pascal_context", "train", "val", 400_000),
    "pascalcontext_fcn16s": ("pascalcontext_fcn16s", 1e-12, 0.99, 1, "sum",
                             "pascal_context", "train", "val", 400_000),
    "pascalcontext_fcn8s": ("pascalcontext_fcn8s", 1e-14, 0.99, 1, "sum",
                            "pascal_context", "train", "val", 400_000),
}


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_config_is_the_reference_solver_and_waits_for_its_data(name,
                                                               tmp_path):
  config = helpers.load_config(name)
  (model, lr, momentum, iter_size, normalization, dataset, train_split,
   eval_split, steps) = SOLVERS[name]
  assert (config.model.name, config.optim.base_lr, config.optim.momentum,
          config.optim.iter_size, config.optim.loss_normalization,
          config.dataset.name, config.dataset.train_split,
          config.dataset.eval_split, config.num_train_steps) == (
              model, lr, momentum, iter_size, normalization, dataset,
              train_split, eval_split, steps)
  spec = run_config.model_spec(config)
  assert spec.num_classes == models.NETS[model].num_classes
  assert (config.optim.trainable == "score") == name.endswith("fixed")
  assert run_config.init_sources(config.init_from, spec)  # An init chain.
  config.init_from = ""  # (The weights are not here either.)
  config.dataset.data_dir = str(tmp_path / "tfds")
  run_config.validate_config(config)
  with pytest.raises(FileNotFoundError,
                     match=f"Dataset {dataset} is not prepared.*prepare_data "
                     f"--dataset {dataset}"):
    run_config.resolve(config, "train", process_count=1)
