"""Tests for pretrained-weight loading: readers, the Caffe-layout seam, the CLI.

Every file is written here in its real format with known random blobs: the
.caffemodel through Google's protobuf runtime, from a descriptor of Caffe's
schema written in this file (field numbers of BVLC caffe.proto), independent
of the reader's hand-written decoder; .pth with torch; .h5 with h5py in
Keras' layout. Forward passes are compared with independent implementations:
the NumPy transcription of the Caffe graph in models_test.py, a torch
transcription of pytorch-fcn's forward, and a torchvision-layout VGG16.
"""

import json
import os

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message_factory

import models_test  # The NumPy Caffe graph: _np_fcn, _np_conv, _np_pool_ceil.
from fcn_jax import checkpointing
from fcn_jax import convert
from fcn_jax import errors
from fcn_jax import models
from fcn_jax.data import preprocessing
from fcn_jax import readers
from fcn_jax.models import weights
from fcn_jax.readers import WeightFileError
from fcn_jax.checkpointing import CheckpointError
from fcn_jax.models.weights import WeightsError
from tests.helpers import jit_apply


def _load_export(directory):
  """``(params, metadata)`` of a weights export, through the one loader."""
  loaded = checkpointing.load(directory)
  return loaded.params, loaded.metadata

DIVISOR = 16  # tiny widths: 4 ... 32 channels, fc 256

# --------------------------------------------------------------------------
# A protobuf schema for the subset of caffe.proto that weights use.
# --------------------------------------------------------------------------

_F = descriptor_pb2.FieldDescriptorProto


def _caffe_classes():
  proto = descriptor_pb2.FileDescriptorProto(
      name="caffe_subset_for_tests.proto", package="caffetest",
      syntax="proto2")

  def message(name, *fields):
    msg = proto.message_type.add(name=name)
    for field_name, number, kind, repeated, type_name, packed in fields:
      field = msg.field.add(
          name=field_name, number=number, type=kind,
          label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
      if type_name:
        field.type_name = ".caffetest." + type_name
      if packed:
        field.options.packed = True

  message("BlobShape", ("dim", 1, _F.TYPE_INT64, True, None, True))
  message("BlobProto",
          ("num", 1, _F.TYPE_INT32, False, None, False),
          ("channels", 2, _F.TYPE_INT32, False, None, False),
          ("height", 3, _F.TYPE_INT32, False, None, False),
          ("width", 4, _F.TYPE_INT32, False, None, False),
          ("data", 5, _F.TYPE_FLOAT, True, None, True),
          ("diff", 6, _F.TYPE_FLOAT, True, None, True),
          ("shape", 7, _F.TYPE_MESSAGE, False, "BlobShape", False),
          ("double_data", 8, _F.TYPE_DOUBLE, True, None, True))
  message("LayerParameter",
          ("name", 1, _F.TYPE_STRING, False, None, False),
          ("type", 2, _F.TYPE_STRING, False, None, False),
          ("bottom", 3, _F.TYPE_STRING, True, None, False),
          ("top", 4, _F.TYPE_STRING, True, None, False),
          ("blobs", 7, _F.TYPE_MESSAGE, True, "BlobProto", False))
  message("V0LayerParameter",
          ("name", 1, _F.TYPE_STRING, False, None, False),
          ("type", 2, _F.TYPE_STRING, False, None, False),
          ("blobs", 50, _F.TYPE_MESSAGE, True, "BlobProto", False))
  message("V1LayerParameter",
          ("layer", 1, _F.TYPE_MESSAGE, False, "V0LayerParameter", False),
          ("bottom", 2, _F.TYPE_STRING, True, None, False),
          ("top", 3, _F.TYPE_STRING, True, None, False),
          ("name", 4, _F.TYPE_STRING, False, None, False),
          ("type", 5, _F.TYPE_INT32, False, None, False),  # an enum on the wire
          ("blobs", 6, _F.TYPE_MESSAGE, True, "BlobProto", False))
  message("NetParameter",
          ("name", 1, _F.TYPE_STRING, False, None, False),
          ("layers", 2, _F.TYPE_MESSAGE, True, "V1LayerParameter", False),
          ("layer", 100, _F.TYPE_MESSAGE, True, "LayerParameter", False))
  pool = descriptor_pool.DescriptorPool()
  pool.Add(proto)
  return message_factory.GetMessageClass(
      pool.FindMessageTypeByName("caffetest.NetParameter"))


NetParameter = _caffe_classes()
V1_TYPES = {"Convolution": 4, "InnerProduct": 14, "Deconvolution": 39,
            "ReLU": 18, "Data": 5}


def _fill_blob(blob, array, legacy, as_double):
  array = np.asarray(array)
  if legacy:  # (num, channels, height, width), padded with leading 1s
    dims = (1,) * (4 - array.ndim) + array.shape
    blob.num, blob.channels, blob.height, blob.width = dims
  else:
    blob.shape.dim.extend(array.shape)
  flat = array.reshape(-1)
  if as_double:
    blob.double_data.extend(flat.astype(np.float64).tolist())
  else:
    blob.data.extend(flat.astype(np.float32).tolist())
    blob.diff.extend(np.ones(flat.size, np.float32).tolist())  # must be skipped


def write_caffemodel(path, layers, *, v1=False, double_layers=(),
                     v0_layers=()):
  """Writes ``{name: blobs}`` as a NetParameter (current or V1 layout)."""
  net = NetParameter(name="test-net")
  data_layer = net.layers.add() if v1 else net.layer.add()
  data_layer.name = "data"
  data_layer.type = V1_TYPES["Data"] if v1 else "Data"
  for name, blobs in layers.items():
    kind = ("Deconvolution" if name.startswith("up") else
            "InnerProduct" if np.ndim(blobs[0]) == 2 else "Convolution")
    if v1:
      layer = net.layers.add(type=V1_TYPES[kind])
      target = layer.layer if name in v0_layers else layer
      target.name = name
      if name in v0_layers:
        target.type = kind.lower()
    else:
      layer = net.layer.add(name=name, type=kind)
      target = layer
    for blob in blobs:
      _fill_blob(target.blobs.add(), blob, legacy=v1,
                 as_double=name in double_layers)
    relu = net.layers.add() if v1 else net.layer.add()
    relu.name = "relu_" + name
    relu.type = V1_TYPES["ReLU"] if v1 else "ReLU"
  with open(path, "wb") as f:
    f.write(net.SerializeToString())
  return path


# --------------------------------------------------------------------------
# Fixtures: random Caffe-layout blobs.
# --------------------------------------------------------------------------


def caffe_blobs(name, seed=0, num_classes=21):
  """Random Caffe blobs for a tiny model (asymmetric deconvolution kernels)."""
  model = models.create_model(name, num_classes, width_divisor=DIVISOR)
  return models_test._random_caffe_blobs(model, np.random.default_rng(seed))


def as_inner_product(blobs, layers=("fc6", "fc7")):
  """The blobs with fc6/fc7 as Caffe InnerProduct (out, in) matrices."""
  out = dict(blobs)
  for layer in layers:
    w, b = blobs[layer]
    out[layer] = [w.reshape(w.shape[0], -1), b]
  return out


def vgg16_blobs(seed=0, classes=10):
  """A tiny VGG16 ImageNet net: 13 convs, fc6/fc7/fc8 as InnerProduct."""
  trunk = {k: v for k, v in caffe_blobs("fcn32s", seed).items()
           if k in models.TRUNK_LAYERS}
  rng = np.random.default_rng(seed + 100)
  width = trunk["fc7"][0].shape[0]
  trunk["fc8"] = [rng.normal(0, 0.1, (classes, width)), rng.normal(0, 0.1, classes)]
  return as_inner_product(trunk)


def assert_same_layers(got, expected):
  assert list(got) == list(expected)
  for name in expected:
    assert len(got[name]) == len(expected[name]), name
    for g, e in zip(got[name], expected[name]):
      np.testing.assert_array_equal(g, np.asarray(e, g.dtype), err_msg=name)


def run_cli(*args):
  return convert.main([str(a) for a in args])


def image(rng, height=37, width=53):
  return rng.normal(0, 50, (height, width, 3))


def relative_error(got, expected):
  return np.abs(got - expected).max() / np.abs(expected).max()


# --------------------------------------------------------------------------
# .caffemodel reader.
# --------------------------------------------------------------------------


def test_caffemodel_current_layout_reads_exact_blobs(tmp_path):
  blobs = as_inner_product(caffe_blobs("fcn8s"))
  path = write_caffemodel(tmp_path / "net.caffemodel", blobs)
  got = readers.read_caffemodel(str(path))
  assert_same_layers(got, blobs)
  assert got["fc6"][0].shape == blobs["fc6"][0].shape  # (256, 32*49)
  assert all(b.dtype == np.float32 for v in got.values() for b in v)


def test_caffemodel_v1_legacy_layout_reads_exact_blobs(tmp_path):
  blobs = vgg16_blobs()
  path = write_caffemodel(tmp_path / "vgg.caffemodel", blobs, v1=True,
                          double_layers=("conv3_2",), v0_layers=("conv2_1",))
  got = readers.read_caffemodel(str(path))
  assert list(got) == list(blobs)
  for name, expected in blobs.items():
    for g, e in zip(got[name], expected):
      # Legacy blobs keep Caffe's 4-D (num, channels, height, width) shape.
      assert g.shape == (1,) * (4 - e.ndim) + e.shape, name
      exact = e.astype(np.float64 if name == "conv3_2" else np.float32)
      np.testing.assert_array_equal(g.reshape(e.shape), exact, err_msg=name)
  assert got["conv3_2"][0].dtype == np.float64
  # The seam takes legacy shapes as they are.
  params = weights.from_caffe_layers(got, "fcn32s", width_divisor=DIVISOR)
  np.testing.assert_array_equal(params["conv2_1"]["bias"],
                                blobs["conv2_1"][1].astype(np.float32))


def test_truncated_caffemodel_is_a_clear_error(tmp_path):
  path = write_caffemodel(tmp_path / "net.caffemodel", caffe_blobs("fcn8s"))
  data = path.read_bytes()
  cut = tmp_path / "cut.caffemodel"
  cut.write_bytes(data[:len(data) * 2 // 3])
  with pytest.raises(WeightFileError, match=r"cut\.caffemodel.*truncated"):
    readers.read_caffemodel(str(cut))


# --------------------------------------------------------------------------
# The seam: Caffe layouts onto the model.
# --------------------------------------------------------------------------


def test_from_caffe_layers_puts_every_value_in_its_place():
  blobs = as_inner_product(caffe_blobs("fcn8s"))
  params, report = weights.from_caffe_layers(
      blobs, "fcn8s", width_divisor=DIVISOR, return_report=True)
  rng = np.random.default_rng(3)
  for name, leaves in params.items():
    kernel = leaves["kernel"]
    w = blobs[name][0]
    kh, kw, cin, cout = kernel.shape
    for _ in range(50):
      h, x, i, o = (rng.integers(n) for n in kernel.shape)
      if "bias" not in leaves:  # Deconvolution (C_in, C_out, k, k), flipped
        expected = w[i, o, kh - 1 - h, kw - 1 - x]
      elif w.ndim == 2:  # InnerProduct, in = c*k*k + h*k + w
        expected = w[o, i * kh * kw + h * kw + x]
      else:  # Convolution OIHW
        expected = w[o, i, h, x]
      assert kernel[h, x, i, o] == np.float32(expected), name
    if "bias" in leaves:
      np.testing.assert_array_equal(leaves["bias"],
                                    blobs[name][1].astype(np.float32))
  assert report.loaded == list(params) and not report.missing
  assert not report.unused
  shapes = models.param_shapes(models.create_model("fcn8s",
                                                    width_divisor=DIVISOR))
  assert jax.tree.map(np.shape, params) == jax.tree.map(lambda s: s.shape,
                                                        shapes)


def test_vgg16_into_fcn_starts_the_head_as_caffe_does(tmp_path):
  blobs = vgg16_blobs()
  path = write_caffemodel(tmp_path / "VGG_ILSVRC_16_layers.caffemodel", blobs,
                          v1=True)
  layers = readers.read_caffemodel(str(path))
  params, report = weights.from_caffe_layers(
      layers, "fcn32s", width_divisor=DIVISOR, return_report=True)
  assert not params["score_fr"]["kernel"].any()
  assert not params["score_fr"]["bias"].any()
  # surgery.interp's bilinear kernel (docs/reference.md §6.2): 1-D (2m+1)/64,
  # mirrored, on the diagonal only.
  profile = np.array([(2 * m + 1) / 64 for m in range(32)] +
                     [(63 - 2 * m) / 64 for m in range(32)])
  upscore = params["upscore"]["kernel"]
  for c in range(21):
    np.testing.assert_allclose(upscore[:, :, c, c], np.outer(profile, profile),
                               atol=1e-7)
  assert np.count_nonzero(upscore) == 21 * 64 * 64
  assert report.missing == {"score_fr": "zeros", "upscore": "bilinear"}
  assert report.unused == ["fc8"]
  assert len(report.loaded) == 15

  atonce = weights.from_caffe_layers(layers, "fcn8s_atonce",
                                     width_divisor=DIVISOR)
  np.testing.assert_array_equal(atonce["scale_pool4"]["scale"],
                                np.full(512 // DIVISOR, 0.01, np.float32))
  np.testing.assert_array_equal(atonce["scale_pool3"]["scale"],
                                np.full(256 // DIVISOR, 1e-4, np.float32))
  assert not atonce["score_pool3"]["kernel"].any()


def test_shape_mismatches_are_all_listed_in_one_error():
  blobs = caffe_blobs("fcn8s")
  with pytest.raises(WeightsError) as error:
    weights.from_caffe_layers(blobs, "fcn8s", width_divisor=8)
  message = str(error.value)
  # At another width every convolution and score layer differs.
  for name in models.TRUNK_LAYERS + ("score_fr", "score_pool4", "score_pool3"):
    assert f"- {name}:" in message, name
  assert "expected (8, 3, 3, 3)" in message  # conv1_1 at width_divisor 8


def test_non_finite_weights_are_an_error():
  blobs = caffe_blobs("fcn32s")
  blobs["conv3_1"][0][0, 0, 0, 0] = np.nan
  with pytest.raises(WeightsError, match="conv3_1: non-finite"):
    weights.from_caffe_layers(blobs, "fcn32s", width_divisor=DIVISOR)


def test_missing_trunk_layer_is_an_error_even_when_partial():
  blobs = caffe_blobs("fcn32s")
  del blobs["conv4_2"]
  for strict in (True, False):
    with pytest.raises(WeightsError, match="missing from the weights: conv4_2"):
      weights.from_caffe_layers(blobs, "fcn32s", strict=strict,
                                width_divisor=DIVISOR)


def test_partial_load_copies_by_name_like_caffe():
  blobs = caffe_blobs("fcn32s")
  with pytest.raises(WeightsError, match="looks like fcn32s") as error:
    weights.from_caffe_layers(blobs, "fcn16s", width_divisor=DIVISOR)
  assert "--allow_partial" in str(error.value)
  params, report = weights.from_caffe_layers(
      blobs, "fcn16s", strict=False, width_divisor=DIVISOR, return_report=True)
  assert report.unused == ["upscore"]
  assert report.missing == {"upscore2": "bilinear", "score_pool4": "zeros",
                            "upscore16": "bilinear"}
  np.testing.assert_array_equal(params["score_fr"]["bias"],
                                blobs["score_fr"][1].astype(np.float32))


# --------------------------------------------------------------------------
# End to end: file -> CLI -> checkpoint -> forward, against the Caffe graph.
# --------------------------------------------------------------------------


def test_converted_fcn8s_forward_equals_numpy_caffe_graph(tmp_path, capsys):
  blobs = caffe_blobs("fcn8s", seed=4)
  path = write_caffemodel(tmp_path / "fcn8s-heavy-pascal.caffemodel",
                          as_inner_product(blobs))
  out = tmp_path / "ckpt"
  assert run_cli("--input", path, "--format", "caffemodel", "--model",
                 "fcn8s", "--output", out, "--width_divisor", DIVISOR) == 0
  printed = capsys.readouterr().out
  assert "upscore_pool4" in printed and "loaded 21 layers" in printed

  params, metadata = _load_export(str(out))
  assert metadata["model"] == "fcn8s" and metadata["num_classes"] == 21
  assert (preprocessing.Preprocessing.from_dict(metadata["preprocessing"])
          == preprocessing.CAFFE_VGG)
  assert metadata["source"]["format"] == "caffemodel"
  assert len(metadata["source"]["sha256"]) == 64
  model = checkpointing.model_spec(metadata).create()
  rng = np.random.default_rng(5)
  x = image(rng)
  got = np.asarray(jit_apply(model, {"params": params}, x[None].astype(np.float32)))
  expected = models_test._np_fcn(blobs, x, "fcn8s")
  assert got[0].shape == expected.shape == (37, 53, 21)
  assert relative_error(got[0], expected) < 1e-5


def test_convolutionalised_fc_matches_dense_classifier_from_caffemodel(tmp_path):
  """VGG16 logits at 224x224 == the converted conv trunk's single cell + fc8."""
  blobs = vgg16_blobs(seed=6)
  path = write_caffemodel(tmp_path / "vgg.caffemodel", blobs, v1=True)
  layers = readers.read_caffemodel(str(path))
  params = weights.from_caffe_layers(layers, "fcn32s", width_divisor=DIVISOR)
  rng = np.random.default_rng(7)
  x = rng.normal(0, 50, (224, 224, 3))
  # Reference: the ImageNet classifier as Caffe runs it, with dense layers.
  h = x
  for block, (_, depth) in enumerate(models.VGG16_BLOCKS, start=1):
    for i in range(1, depth + 1):
      w, b = blobs[f"conv{block}_{i}"]
      h = np.maximum(models_test._np_conv(h, w, b, pad=1), 0)
    h = models_test._np_pool_ceil(h)
  flat = h.transpose(2, 0, 1).reshape(-1)  # Caffe blobs are C x H x W
  for layer in ("fc6", "fc7"):
    flat = np.maximum(blobs[layer][0] @ flat + blobs[layer][1], 0)
  logits = blobs["fc8"][0] @ flat + blobs["fc8"][1]

  trunk = models.VGG16(width_divisor=DIVISOR, input_pad=1)
  trunk_params = {k: params[k] for k in models.TRUNK_LAYERS}
  cell = trunk.apply({"params": trunk_params}, x[None].astype(np.float32))["fc7"]
  assert cell.shape[:3] == (1, 1, 1)
  fc8_w, fc8_b = layers["fc8"]
  fc8_w = fc8_w.reshape(fc8_w.shape[-2:])  # legacy (1, 1, out, in)
  got = fc8_w @ np.asarray(cell)[0, 0, 0] + fc8_b.reshape(-1)
  assert relative_error(got, logits) < 1e-5


# --------------------------------------------------------------------------
# PyTorch: pytorch-fcn and torchvision naming.
# --------------------------------------------------------------------------


def _torch():
  return pytest.importorskip("torch", reason="torch is an optional extra "
                             "(pip install 'fcn_jax[torch]')")


def _torch_fcn8s_atonce(sd, x):
  """pytorch-fcn's FCN8sAtOnce.forward, transcribed with torch.nn.functional."""
  torch = _torch()
  F = torch.nn.functional
  h, pools = x, {}
  for block, (_, depth) in enumerate(models.VGG16_BLOCKS, start=1):
    for i in range(1, depth + 1):
      name = f"conv{block}_{i}"
      h = F.relu(F.conv2d(h, sd[name + ".weight"], sd[name + ".bias"],
                          padding=100 if name == "conv1_1" else 1))
    h = F.max_pool2d(h, 2, stride=2, ceil_mode=True)
    pools[block] = h
  h = F.relu(F.conv2d(h, sd["fc6.weight"], sd["fc6.bias"]))
  h = F.relu(F.conv2d(h, sd["fc7.weight"], sd["fc7.bias"]))
  h = F.conv2d(h, sd["score_fr.weight"], sd["score_fr.bias"])
  upscore2 = F.conv_transpose2d(h, sd["upscore2.weight"], stride=2)
  p4 = F.conv2d(pools[4] * 0.01, sd["score_pool4.weight"], sd["score_pool4.bias"])
  p4 = p4[:, :, 5:5 + upscore2.shape[2], 5:5 + upscore2.shape[3]]
  up_p4 = F.conv_transpose2d(upscore2 + p4, sd["upscore_pool4.weight"], stride=2)
  p3 = F.conv2d(pools[3] * 0.0001, sd["score_pool3.weight"], sd["score_pool3.bias"])
  p3 = p3[:, :, 9:9 + up_p4.shape[2], 9:9 + up_p4.shape[3]]
  h = F.conv_transpose2d(up_p4 + p3, sd["upscore8.weight"], stride=8)
  return h[:, :, 31:31 + x.shape[2], 31:31 + x.shape[3]]


def test_pytorch_fcn_pth_atonce_forward_equals_torch(tmp_path):
  torch = _torch()
  blobs = {k: v for k, v in caffe_blobs("fcn8s_atonce", seed=8).items()
           if not k.startswith("scale_")}  # pytorch-fcn scales in forward()
  sd = {f"{layer}.{kind}": torch.tensor(b, dtype=torch.float32)
        for layer, bs in blobs.items() for kind, b in zip(("weight", "bias"), bs)}
  path = tmp_path / "fcn8s-atonce_from_caffe.pth"
  torch.save(sd, path)
  assert_same_layers(readers.read_pytorch_fcn(str(path)), blobs)

  out = tmp_path / "ckpt"
  assert run_cli("--input", path, "--format", "pytorch", "--model",
                 "fcn8s_atonce", "--output", out, "--width_divisor", DIVISOR) == 0
  params, metadata = _load_export(str(out))
  assert metadata["report"]["missing"] == {"scale_pool4": "constant 0.01",
                                           "scale_pool3": "constant 0.0001"}
  assert metadata["preprocessing"]["name"] == "caffe_vgg"
  x = image(np.random.default_rng(9))
  with torch.no_grad():
    expected = _torch_fcn8s_atonce(
        sd, torch.tensor(x.transpose(2, 0, 1)[None], dtype=torch.float32))
  expected = expected[0].numpy().transpose(1, 2, 0)
  got = checkpointing.model_spec(metadata).create().apply(
      {"params": params}, x[None].astype(np.float32))
  assert relative_error(np.asarray(got)[0], expected) < 1e-5


def _torchvision_vgg16(torch, classes):
  """A tiny VGG16 with torchvision's module layout (features/avgpool/classifier)."""
  nn = torch.nn
  layers, channels = [], 3
  for width, depth in models.VGG16_BLOCKS:
    for _ in range(depth):
      layers += [nn.Conv2d(channels, width // DIVISOR, 3, padding=1),
                 nn.ReLU(inplace=True)]
      channels = width // DIVISOR
    layers.append(nn.MaxPool2d(2, 2))
  fc = models.FC_WIDTH // DIVISOR
  net = nn.Module()
  net.features = nn.Sequential(*layers)
  net.avgpool = nn.AdaptiveAvgPool2d((7, 7))
  net.classifier = nn.Sequential(
      nn.Linear(channels * 49, fc), nn.ReLU(True), nn.Dropout(),
      nn.Linear(fc, fc), nn.ReLU(True), nn.Dropout(), nn.Linear(fc, classes))
  return net.eval()


def test_torchvision_vgg16_logits_equal_convolutionalised_cell(tmp_path):
  torch = _torch()
  torch.manual_seed(0)
  net = _torchvision_vgg16(torch, classes=10)
  path = tmp_path / "vgg16-397923af.pth"
  torch.save(net.state_dict(), path)
  x = np.random.default_rng(10).normal(0, 1, (224, 224, 3))
  with torch.no_grad():
    xt = torch.tensor(x.transpose(2, 0, 1)[None], dtype=torch.float32)
    logits = net.classifier(torch.flatten(net.avgpool(net.features(xt)), 1))
  logits = logits[0].numpy()

  out = tmp_path / "ckpt"
  assert run_cli("--input", path, "--format", "torchvision", "--model",
                 "fcn32s", "--output", out, "--width_divisor", DIVISOR) == 0
  params, metadata = _load_export(str(out))
  assert (preprocessing.Preprocessing.from_dict(metadata["preprocessing"])
          == preprocessing.TORCHVISION)
  assert metadata["report"]["unused"] == ["fc8"]
  layers = readers.read_torchvision_vgg16(str(path))
  trunk = models.VGG16(width_divisor=DIVISOR, input_pad=1)
  cell = trunk.apply({"params": {k: params[k] for k in models.TRUNK_LAYERS}},
                     x[None].astype(np.float32))["fc7"]
  got = layers["fc8"][0] @ np.asarray(cell)[0, 0, 0] + layers["fc8"][1]
  assert relative_error(got, logits) < 1e-5


def test_pytorch_naming_errors(tmp_path):
  torch = _torch()
  net = _torchvision_vgg16(torch, classes=3)
  path = tmp_path / "vgg16.pth"
  torch.save(net.state_dict(), path)
  with pytest.raises(WeightFileError, match="--format torchvision"):
    readers.read_pytorch_fcn(str(path))
  sd = dict(net.state_dict())
  sd["features.1.running_mean"] = torch.zeros(4)
  torch.save(sd, tmp_path / "bn.pth")
  with pytest.raises(WeightFileError, match="Batch-norm"):
    readers.read_torchvision_vgg16(str(tmp_path / "bn.pth"))
  data = path.read_bytes()
  (tmp_path / "cut.pth").write_bytes(data[:len(data) // 2])
  with pytest.raises(WeightFileError, match=r"cut\.pth.*truncated"):
    readers.read_torchvision_vgg16(str(tmp_path / "cut.pth"))


def test_state_dict_mapping_without_torch():
  rng = np.random.default_rng(11)
  sd = {"module.features.0.weight": rng.normal(size=(4, 3, 3, 3)),
        "module.features.0.bias": rng.normal(size=4),
        "module.classifier.6.weight": rng.normal(size=(5, 8))}
  layers = readers.pytorch.state_dict_to_layers(sd, "torchvision")
  assert list(layers) == ["conv1_1", "fc8"]
  np.testing.assert_array_equal(layers["conv1_1"][1], sd["module.features.0.bias"])
  with pytest.raises(WeightFileError, match="features.1.weight"):
    readers.pytorch.state_dict_to_layers({"features.1.weight": np.zeros(3)},
                                         "torchvision")


# --------------------------------------------------------------------------
# Keras .h5.
# --------------------------------------------------------------------------


KERAS_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels.h5"


def keras_vgg16(seed=12, classes=10):
  """Random Keras VGG16 weights: HWIO kernels, Dense (in, out), tiny widths."""
  rng = np.random.default_rng(seed)
  weights_by_layer, channels = {}, 3
  for b, (width, depth) in enumerate(models.VGG16_BLOCKS, start=1):
    for i in range(1, depth + 1):
      out = width // DIVISOR
      weights_by_layer[f"block{b}_conv{i}"] = (
          rng.normal(0, 0.3, (3, 3, channels, out)), rng.normal(0, 0.1, out))
      channels = out
  fc = models.FC_WIDTH // DIVISOR
  weights_by_layer["fc1"] = (rng.normal(0, 0.1, (7 * 7 * channels, fc)),
                             rng.normal(0, 0.1, fc))
  weights_by_layer["fc2"] = (rng.normal(0, 0.1, (fc, fc)), rng.normal(0, 0.1, fc))
  weights_by_layer["predictions"] = (rng.normal(0, 0.1, (fc, classes)),
                                     rng.normal(0, 0.1, classes))
  return {k: (w.astype(np.float32), b.astype(np.float32))
          for k, (w, b) in weights_by_layer.items()}


def write_keras_h5(path, layer_weights, *, full_model=False, keras1=False):
  """Keras' HDF5 weights layout: layer groups listing their weight_names."""
  names = (["input_1"] + [n for n in layer_weights if n.startswith("block")]
           + ["flatten"] + [n for n in layer_weights if not n.startswith("block")])
  with h5py.File(path, "w") as f:
    root = f.create_group("model_weights") if full_model else f
    root.attrs["layer_names"] = np.array([n.encode() for n in names])
    for name in names:
      group = root.create_group(name)
      if name not in layer_weights:
        group.attrs["weight_names"] = np.array([], dtype="S1")
        continue
      weight_names = ([f"{name}_W:0", f"{name}_b:0"] if keras1 else
                      [f"{name}/kernel:0", f"{name}/bias:0"])
      group.attrs["weight_names"] = np.array([n.encode() for n in weight_names])
      for weight_name, value in zip(weight_names, layer_weights[name]):
        group.create_dataset(weight_name, data=value)
  return path


@pytest.mark.parametrize("full_model,keras1", [(False, False), (True, True)])
def test_keras_h5_reads_into_caffe_layout(tmp_path, full_model, keras1):
  kw = keras_vgg16()
  path = write_keras_h5(tmp_path / KERAS_FILE,
                        kw, full_model=full_model, keras1=keras1)
  layers = readers.read_keras_vgg16(str(path))
  assert list(layers) == list(models.TRUNK_LAYERS) + ["fc8"]
  k, b = kw["block3_conv2"]
  w = layers["conv3_2"][0]
  for o, i, h, x in np.random.default_rng(0).integers(0, 3, (20, 4)):
    assert w[o, i, h, x] == k[h, x, i, o]
  np.testing.assert_array_equal(layers["conv3_2"][1], b)
  # fc1 reads pool5 flattened channels-last; the Caffe blob reads it C, H, W.
  channels = kw["block5_conv3"][0].shape[-1]
  pool5 = np.random.default_rng(1).normal(size=(7, 7, channels))
  keras_fc1 = pool5.reshape(-1) @ kw["fc1"][0] + kw["fc1"][1]
  fc6_w, fc6_b = layers["fc6"]
  caffe_fc6 = fc6_w @ pool5.transpose(2, 0, 1).reshape(-1) + fc6_b
  np.testing.assert_allclose(caffe_fc6, keras_fc1, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(layers["fc7"][0], kw["fc2"][0].T)
  np.testing.assert_array_equal(layers["fc8"][0], kw["predictions"][0].T)


def test_keras_h5_converts_with_its_preprocessing(tmp_path):
  kw = keras_vgg16()
  path = write_keras_h5(tmp_path / KERAS_FILE, kw)
  out = tmp_path / "ckpt"
  assert run_cli("--input", path, "--format", "keras", "--model", "fcn32s",
                 "--output", out, "--width_divisor", DIVISOR) == 0
  params, metadata = _load_export(str(out))
  assert metadata["preprocessing"]["name"] == "keras_vgg"
  assert metadata["preprocessing"]["channel_order"] == "BGR"
  kernel, fc1 = params["fc6"]["kernel"], kw["fc1"][0]
  c = kernel.shape[2]
  for h, x, ch, o in np.random.default_rng(2).integers(0, [7, 7, c, 256], (50, 4)):
    assert kernel[h, x, ch, o] == fc1[h * 7 * c + x * c + ch, o]
  np.testing.assert_array_equal(params["conv1_1"]["kernel"], kw["block1_conv1"][0])


def test_keras_theano_ordering_and_notop_files_are_errors(tmp_path):
  kw = keras_vgg16()
  th = dict(kw)
  th["block1_conv1"] = (kw["block1_conv1"][0].transpose(3, 2, 0, 1),
                        kw["block1_conv1"][1])
  path = write_keras_h5(tmp_path / "th.h5", th)
  with pytest.raises(WeightFileError, match="Theano"):
    readers.read_keras_vgg16(str(path))
  notop = {k: v for k, v in kw.items() if k.startswith("block")}
  path = write_keras_h5(tmp_path / "vgg16_notop.h5", notop)
  with pytest.raises(WeightsError, match="missing from .*fc6, fc7"):
    weights.from_caffe_layers(readers.read_keras_vgg16(str(path)), "fcn32s",
                              width_divisor=DIVISOR, source=str(path))


# --------------------------------------------------------------------------
# The CLI's errors: one clear message each, nothing written.
# --------------------------------------------------------------------------


def _cli_fails(tmp_path, capsys, *args, match):
  out = tmp_path / "never"
  assert run_cli(*args, "--output", out, "--width_divisor", DIVISOR) == 2
  err = capsys.readouterr().err
  assert err.startswith("error:")
  assert match in err, err
  assert not out.exists()
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".never")]
  return err


def test_cli_wrong_model(tmp_path, capsys):
  path = write_caffemodel(tmp_path / "net.caffemodel", caffe_blobs("fcn8s"))
  err = _cli_fails(tmp_path, capsys, "--input", path, "--format", "caffemodel",
                   "--model", "fcn32s", match="--model fcn8s")
  assert "upscore_pool4" in err and "missing from" in err


def test_cli_wrong_class_count(tmp_path, capsys):
  path = write_caffemodel(tmp_path / "net.caffemodel", caffe_blobs("fcn8s"))
  err = _cli_fails(tmp_path, capsys, "--input", path, "--format", "caffemodel",
                   "--model", "fcn8s", "--num_classes", "40",
                   match="--num_classes 21")
  for layer in ("score_fr", "score_pool4", "score_pool3", "upscore2",
                "upscore_pool4", "upscore8"):
    assert f"- {layer}:" in err


def test_cli_truncated_file(tmp_path, capsys):
  path = write_caffemodel(tmp_path / "net.caffemodel", caffe_blobs("fcn32s"))
  data = path.read_bytes()
  path.write_bytes(data[:len(data) - 100])
  _cli_fails(tmp_path, capsys, "--input", path, "--format", "caffemodel",
             "--model", "fcn32s", match="truncated")


@pytest.mark.parametrize("content,fmt,match", [
    (b"\x89HDF\r\n\x1a\n" + b"\0" * 64, "caffemodel", "--format keras"),
    (b"<!DOCTYPE html><html>Google Drive quota exceeded</html>", "pytorch",
     "HTML"),
    (b'name: "FCN"\nlayer { name: "data" type: "Input" }\n', "caffemodel",
     "text file"),
    (b"", "keras", "empty"),
])
def test_cli_wrong_file(tmp_path, capsys, content, fmt, match):
  path = tmp_path / "weights.bin"
  path.write_bytes(content)
  _cli_fails(tmp_path, capsys, "--input", path, "--format", fmt, "--model",
             "fcn32s", match=match)


@pytest.mark.parametrize("v1", [False, True])
@pytest.mark.parametrize("fmt", ["keras", "pytorch"])
def test_cli_caffemodel_read_as_another_format(tmp_path, capsys, fmt, v1):
  # Named .bin: recognised by its bytes, not its name.
  path = write_caffemodel(tmp_path / "net.bin", caffe_blobs("fcn32s"), v1=v1)
  err = _cli_fails(tmp_path, capsys, "--input", path, "--format", fmt,
                   "--model", "fcn32s", match="net.bin is a Caffe .caffemodel")
  assert "Use --format caffemodel" in err and "corrupt" not in err


def test_pickled_whole_module_is_named_not_called_corrupt(tmp_path):
  torch = _torch()
  path = tmp_path / "model.pth"
  torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), path)
  with pytest.raises(WeightFileError) as error:
    readers.read_pytorch_fcn(str(path))
  message = str(error.value)
  assert "torch.nn.modules.container.Sequential" in message
  assert "model.state_dict()" in message and "truncated" not in message


def test_cli_torchvision_caffe_file_name_check(tmp_path, capsys):
  torch = _torch()
  path = tmp_path / "vgg16_from_caffe.pth"
  torch.save(_torchvision_vgg16(torch, 3).state_dict(), path)
  _cli_fails(tmp_path, capsys, "--input", path, "--format", "torchvision",
             "--model", "fcn32s", match="--preprocessing caffe_vgg")
  out = tmp_path / "ckpt"
  assert run_cli("--input", path, "--format", "torchvision", "--model",
                 "fcn32s", "--preprocessing", "caffe_vgg", "--output", out,
                 "--width_divisor", DIVISOR) == 0
  assert checkpointing.load_metadata(str(out))["preprocessing"]["name"] == "caffe_vgg"


def test_cli_at_once_file_name_check(tmp_path, capsys):
  blobs = caffe_blobs("fcn8s_atonce")
  atonce = write_caffemodel(tmp_path / "fcn8s-atonce-pascal.caffemodel", blobs)
  _cli_fails(tmp_path, capsys, "--input", atonce, "--format", "caffemodel",
             "--model", "fcn8s", match="fcn8s_atonce")


def test_cli_refuses_to_overwrite(tmp_path, capsys):
  path = write_caffemodel(tmp_path / "net.caffemodel", caffe_blobs("fcn32s"))
  out = tmp_path / "ckpt"
  out.mkdir()
  (out / "keep.txt").write_text("mine")
  assert run_cli("--input", path, "--format", "caffemodel", "--model",
                 "fcn32s", "--output", out, "--width_divisor", DIVISOR) == 2
  assert "--overwrite" in capsys.readouterr().err
  assert os.listdir(out) == ["keep.txt"]
  assert run_cli("--input", path, "--format", "caffemodel", "--model",
                 "fcn32s", "--output", out, "--width_divisor", DIVISOR,
                 "--overwrite") == 0
  assert sorted(os.listdir(out)) == ["fcn_jax_weights.json", "params"]


def test_cli_help_lists_formats(capsys):
  with pytest.raises(SystemExit) as exit_info:
    convert.main(["--help"])
  assert exit_info.value.code == 0
  text = capsys.readouterr().out
  for fmt in ("caffemodel", "pytorch", "torchvision", "keras", "--allow_partial"):
    assert fmt in text


# --------------------------------------------------------------------------
# Params checkpoints and staged initialisation.
# --------------------------------------------------------------------------


def _tiny_params(name, num_classes=21):
  return weights.from_caffe_layers(caffe_blobs(name, num_classes=num_classes),
                                   name, num_classes, width_divisor=DIVISOR)


def _metadata(name, num_classes=21):
  return checkpointing.make_metadata(
      models.ModelSpec(name, num_classes, width_divisor=DIVISOR),
      preprocessing.CAFFE_VGG)


def test_save_and_load_round_trip(tmp_path):
  params = _tiny_params("fcn16s")
  directory = checkpointing.save_weights(str(tmp_path / "a" / "b"), params,
                                         _metadata("fcn16s"))
  loaded, metadata = _load_export(directory)
  assert jax.tree.structure(loaded) == jax.tree.structure(params)
  jax.tree.map(np.testing.assert_array_equal, loaded, params)
  assert metadata["model_options"] == {"width_divisor": DIVISOR}
  with pytest.raises(CheckpointError, match="not empty"):
    checkpointing.save_weights(directory, params, _metadata("fcn16s"))


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
  import orbax.checkpoint as ocp

  def broken_save(*args, **kwargs):
    raise OSError("disk full")

  monkeypatch.setattr(ocp.StandardCheckpointer, "save", broken_save)
  with pytest.raises(OSError, match="disk full"):
    checkpointing.save_weights(str(tmp_path / "new" / "ckpt"),
                               _tiny_params("fcn32s"), _metadata("fcn32s"))
  assert os.listdir(tmp_path) == []


def test_load_params_rejects_other_directories(tmp_path):
  with pytest.raises(CheckpointError, match="no such directory"):
    checkpointing.load_metadata(str(tmp_path / "absent"))
  with pytest.raises(FileNotFoundError, match="no such weights"):
    checkpointing.load(str(tmp_path / "absent"))
  (tmp_path / "train_ckpt").mkdir()
  with pytest.raises(CheckpointError, match="not an fcn_jax weights export"):
    checkpointing.load_metadata(str(tmp_path / "train_ckpt"))
  with pytest.raises(CheckpointError, match="neither a weights export"):
    checkpointing.load(str(tmp_path / "train_ckpt"))
  directory = checkpointing.save_weights(
      str(tmp_path / "c"), _tiny_params("fcn32s"), _metadata("fcn32s"))
  meta_path = os.path.join(directory, checkpointing.WEIGHTS_METADATA_FILE)
  meta = json.load(open(meta_path))
  meta["model"] = "fcn8s"  # params no longer fit the model it names
  json.dump(meta, open(meta_path, "w"))
  with pytest.raises(CheckpointError, match="do not fit fcn8s"):
    checkpointing.load(directory)
  meta["format_version"] = 99
  json.dump(meta, open(meta_path, "w"))
  with pytest.raises(CheckpointError, match="format_version 99"):
    checkpointing.load(directory)


def _initial_params(name, num_classes=21):
  """A fresh model's params as training starts them (VGG16 trunk, head init).

  Cheaper than ``models.init_variables``, which compiles the forward pass.
  """
  trunk = {k: v for k, v in caffe_blobs(name, seed=20).items()
           if k in models.TRUNK_LAYERS}
  params = weights.from_caffe_layers(trunk, name, num_classes,
                                     width_divisor=DIVISOR)
  return jax.tree.map(jnp.asarray, params)


def test_copy_by_name_stages_fcn32s_into_fcn16s():
  source = _tiny_params("fcn32s")
  target = _initial_params("fcn16s")
  params, report = weights.copy_by_name(source, target)
  for layer in models.TRUNK_LAYERS + ("score_fr",):
    for leaf in ("kernel", "bias"):
      np.testing.assert_array_equal(params[layer][leaf], source[layer][leaf])
  assert not np.asarray(params["score_pool4"]["kernel"]).any()  # zero skip
  assert not np.asarray(params["score_pool4"]["bias"]).any()
  # docs/reference.md §6.2, k=4.
  upscore2 = np.zeros((4, 4, 21, 21), np.float32)
  upscore2[:, :, range(21), range(21)] = np.outer(
      [0.25, 0.75, 0.75, 0.25], [0.25, 0.75, 0.75, 0.25])[..., None]
  np.testing.assert_array_equal(params["upscore2"]["kernel"], upscore2)
  assert report.unused == ["upscore"]
  assert set(report.missing) == {"upscore2", "score_pool4", "upscore16"}
  assert report.loaded == list(models.TRUNK_LAYERS) + ["score_fr"]
  # The target's array kind and dtype are kept.
  assert isinstance(params["conv1_1"]["kernel"], jax.Array)
  assert params["conv1_1"]["kernel"].dtype == jnp.float32


def test_copy_by_name_lists_shape_mismatches():
  source = _tiny_params("fcn32s", num_classes=21)
  target = _initial_params("fcn16s", num_classes=5)
  with pytest.raises(WeightsError, match="score_fr: source") as error:
    weights.copy_by_name(source, target)
  assert "conv1_1" not in str(error.value)


def test_copy_by_name_refuses_a_class_mixing_upsampler_as_depthwise():
  dense = {"upscore": {"kernel": models.bilinear_kernel(4, 3)}}
  target = {"upscore": {"kernel": np.zeros((4, 4, 1, 3), np.float32)}}
  params, report = weights.copy_by_name(dense, target)  # Diagonal: fine.
  np.testing.assert_array_equal(params["upscore"]["kernel"][:, :, 0, 1],
                                dense["upscore"]["kernel"][:, :, 1, 1])
  assert "dense -> depthwise" in report.table()
  dense["upscore"]["kernel"][1, 2, 0, 1] = 0.5  # Class 0 feeds class 1.
  with pytest.raises(WeightsError, match="upscore: .*mixes classes"):
    weights.copy_by_name(dense, target)


# --------------------------------------------------------------------------
# Preprocessing travels with the weights.
# --------------------------------------------------------------------------


def test_resolve_preprocessing():
  caffe = preprocessing.CAFFE_VGG.to_dict()
  torchvision = preprocessing.TORCHVISION.to_dict()
  resolve = preprocessing.resolve
  assert resolve(None, torchvision) == preprocessing.TORCHVISION
  assert resolve("", caffe) == preprocessing.CAFFE_VGG
  assert resolve(None, None) == preprocessing.CAFFE_VGG
  assert resolve("torchvision", None) == preprocessing.TORCHVISION
  assert resolve("caffe_vgg", caffe) == preprocessing.CAFFE_VGG
  # keras_vgg is the same transform under another name: no conflict.
  assert resolve("keras_vgg", caffe).name == "keras_vgg"
  with pytest.raises(errors.UserError) as error:
    resolve("torchvision", caffe)
  message = str(error.value)
  assert "torchvision" in message and "caffe_vgg" in message
  assert "force_preprocessing" in message
  assert resolve("torchvision", caffe, force=True) == preprocessing.TORCHVISION
  with pytest.raises(errors.UserError, match="unknown preprocessing 'imagenet' "
                     r"\(config.preprocessing"):
    resolve("imagenet", caffe)
