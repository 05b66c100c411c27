"""siftflow-fcn32s: SIFT Flow, one trunk and two heads (sem 33, geo 3).

The reference "heavy" solver (docs/reference.md §5.1, §5.3, §8.3): batch 1, the
sum of the two unnormalised losses (sem and geo, each ignoring 255, weight 1),
lr 1e-10, momentum 0.99, trained on trainval (2,486 images) from VGG16,
evaluated on test (200) every 2000 iterations for 100k (the solve.py loop, 50 x
2000). The reported metrics are the sem head's; every head's are under
``heads`` (geometric accuracy: ``heads.geo.pixel_acc``).

Published: none for this stride (CVPR Table 5 reports the FCN-16s: 85.2 / 51.7
/ 39.5 / 76.1 and geometric acc. 94.3; docs/reference.md §9.3).

Needs the sift_flow dataset: python -m fcn_jax.prepare_data --dataset sift_flow
--manual_dir DIR (until then training stops with that instruction).

  python -m fcn_jax.main --config configs/siftflow_fcn32s.py \
      --workdir runs/siftflow_fcn32s
"""

from fcn_jax import default_config


def get_config():
  config = default_config.get_config()
  config.model.name = "siftflow_fcn32s"
  config.model.num_classes = 33
  config.init_from = "weights/vgg16_caffe"
  config.preprocessing = "sift_flow"
  # The reference fine-tunes VGG16 with SIFT Flow's own mean.
  config.force_preprocessing = True
  config.dataset.name = "sift_flow"
  config.dataset.train_split = "trainval"
  config.dataset.eval_split = "test"
  config.dataset.label_features = {"sem": "semantic_mask",
                                   "geo": "geometric_mask"}
  # Never in the test set: left out of the means, as the paper scores only
  # the classes present (docs/reference.md §7).
  config.eval.exclude_classes = ("cow", "desert", "moon")
  config.optim.base_lr = 1e-10
  config.num_train_steps = 100_000
  config.eval_every_steps = 2000
  config.checkpoint.every_steps = 2000
  return config
