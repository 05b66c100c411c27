"""Every net of the FCN reference repository, in Flax linen.

* :mod:`~fcn_jax.models.layers`: the Caffe layers (bilinear kernels,
  round-up pooling, crops, LRN, Scale, depthwise upsampling).
* :mod:`~fcn_jax.models.trunks`: the base nets as layer tables, VGG16 and
  CaffeNet, convolutionalised.
* :mod:`~fcn_jax.models.heads`: the head table (:data:`HEADS`), one
  :class:`HeadSpec` per head.
* :mod:`~fcn_jax.models.nets`: the reference nets by name (:data:`NETS`):
  trunk, head, inputs, streams, outputs and fusion.
* :mod:`~fcn_jax.models.fcn`: the :class:`FCN` module that runs them.
* :mod:`~fcn_jax.models.spec`: :class:`ModelSpec`, the one description of a
  model, and :func:`create_model`.

==========================  ===================  ===========================
name                        input                output
==========================  ===================  ===========================
``fcn32s`` ... ``fcn8s``,   ``[N, H, W, 3]``     ``[N, H, W, 21]``
``fcn8s_atonce``,
``fcn_alexnet``
``nyud_fcn32s_color``,      ``[N, H, W, 3]``     ``[N, H, W, 40]``
``nyud_fcn32s_hha``
``nyud_fcn32s_color_d``     ``[N, H, W, 4]``     ``[N, H, W, 40]``
``nyud_fcn32s_color_hha``   ``{"color", "hha"}`` ``[N, H, W, 40]``
``siftflow_fcn{32,16,8}s``  ``[N, H, W, 3]``     ``{"sem": 33, "geo": 3}``
``pascalcontext_fcn*``      ``[N, H, W, 3]``     ``[N, H, W, 60]``
==========================  ===================  ===========================
"""

from fcn_jax.models.fcn import FCN
from fcn_jax.models.heads import HEADS
from fcn_jax.models.heads import HeadSpec
from fcn_jax.models.heads import SCORE_LAYER
from fcn_jax.models.heads import Skip
from fcn_jax.models.heads import Upsampler
from fcn_jax.models.layers import DepthwiseConvTranspose
from fcn_jax.models.layers import Scale
from fcn_jax.models.layers import bilinear_kernel
from fcn_jax.models.layers import caffe_conv
from fcn_jax.models.layers import convolutionalize
from fcn_jax.models.layers import crop_like
from fcn_jax.models.layers import dense_kernel
from fcn_jax.models.layers import depthwise_kernel
from fcn_jax.models.layers import local_response_norm
from fcn_jax.models.layers import max_pool_ceil
from fcn_jax.models.nets import MODEL_NAMES
from fcn_jax.models.nets import NETS
from fcn_jax.models.nets import Net
from fcn_jax.models.nets import SINGLE_OUTPUT
from fcn_jax.models.spec import DTYPES
from fcn_jax.models.spec import ModelSpec
from fcn_jax.models.spec import UPSAMPLE_MODES
from fcn_jax.models.spec import create_model
from fcn_jax.models.spec import init_variables
from fcn_jax.models.spec import model_layer_names
from fcn_jax.models.spec import param_shapes
from fcn_jax.models.trunks import CAFFENET_LAYERS
from fcn_jax.models.trunks import CAFFENET_TRUNK
from fcn_jax.models.trunks import CaffeNet
from fcn_jax.models.trunks import DROPOUT_RATE
from fcn_jax.models.trunks import FC6_KERNEL
from fcn_jax.models.trunks import FC_WIDTH
from fcn_jax.models.trunks import INPUT_PAD
from fcn_jax.models.trunks import TRUNK_LAYERS
from fcn_jax.models.trunks import TRUNKS
from fcn_jax.models.trunks import Trunk
from fcn_jax.models.trunks import TrunkLayer
from fcn_jax.models.trunks import TrunkSpec
from fcn_jax.models.trunks import VGG16
from fcn_jax.models.trunks import VGG16_BLOCKS
from fcn_jax.models.trunks import VGG16_TRUNK

