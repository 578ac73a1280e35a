"""Inception v3 (Szegedy et al. 2016) and BN-Inception (Ioffe & Szegedy 2015) on ImageNet.

  python main.py --config=configs/inception_imagenet.py --workdir=runs/inception_v3
  python main.py --config=configs/inception_imagenet.py:bninception --workdir=runs/bninception
  python main.py --config=configs/inception_imagenet.py:se_bninception --workdir=runs/se_bninception
  # Keras's Inception v3 (BatchNorm without γ), or without the auxiliary head:
  python main.py --config=configs/inception_imagenet.py --config.model.bn_scale=False ...
  python main.py --config=configs/inception_imagenet.py --config.model.aux_logits=False ...

inception_v3, the paper's §8 and §7: RMSProp with decay 0.9 and ε = 1.0, lr decayed ×0.94
every two epochs, gradient clipping at global norm 2.0, label smoothing 0.1, 100 epochs, 299 px
Inception crops (8–100 % of the area, aspect ratio 3/4–4/3) with flips and TF-slim's colour
distortion as color_jitter(0.125, 0.5, 0.5, 0.2) (TF-slim's brightness is an additive ±32/255,
here a ±12.5 % factor); evaluation on the centre 299 crop of images resized to 342. The paper
trained 50 asynchronous replicas of batch 32 at lr 0.045, which gives no rule for one
synchronous batch; the lr here is Google's Cloud TPU Inception v3 reference's, 0.165 per 256
images scaled linearly (linear scaling of 0.045 per 32 would give 0.36, 2.2× more). From the
TF-slim trainer and that reference: RMSProp momentum 0.9, weight decay 4e-5 on conv and fc
weights, auxiliary loss weight 0.4. Not reproduced: evaluating a running average of the
parameters. Paper: 21.2 % top-1 /
5.6 % top-5 error, one 299 crop, on the 48,238 non-blacklisted ILSVRC-2012 validation images.

bninception, BN-x30 of the paper's §4.2: SGD with momentum (0.9 assumed; the paper does not
say), lr 0.045 per batch of 32 (its batch), scaled linearly (0.36 at 256); no dropout; L2 weight
decay 5× lower than GoogLeNet's (4e-5, from Caffe bvlc_googlenet's 2e-4, as TF-slim's
Inception v2); the lr decayed exponentially "6 times faster" than GoogLeNet's 4 % every 8
epochs, i.e. ×0.96 every 4/3 epochs; 150 epochs (BN-x30 peaked after 6·10⁶ steps of 32 images).
Inception crops and flips. Not reproduced: within-shard shuffling details and the reduced
photometric distortions (color_jitter with small strengths can stand in). Paper: 25.2 % top-1 /
7.82 % top-5 error with one 224 crop on the 50,000 validation images. Not measured here.

se_bninception (Hu et al. 2018's SE-BN-Inception) takes bninception's recipe; its authors'
released model: 23.62 % top-1 / 7.04 % top-5 error with one 224 crop. Not measured here.
"""

import ml_collections

from configs import default, recipes

# TF-slim's distort_color (brightness, contrast, saturation, hue) in color_jitter's terms.
TF_SLIM_COLOUR = (0.125, 0.5, 0.5, 0.2)

VARIANTS = ('inception_v3', 'bninception', 'se_bninception')
DATASETS = ('imagenet2012',)


def get_config(arg=None) -> ml_collections.ConfigDict:
  """`arg`: 'variant[,dataset]' from VARIANTS and DATASETS."""
  variant, _ = recipes.parse_arg(arg, VARIANTS, DATASETS)
  config = default.get_config()
  config.batch_size = 256
  config.log_every_steps = 100
  if variant == 'inception_v3':
    config.model = recipes.model(variant, aux_logits=True, dropout_rate=0.5, bn_scale=True)
    recipes.imagenet(config, image_size=299, resize_to=342, color_jitter=TF_SLIM_COLOUR)
    config.num_epochs = 100
    config.optimizer.update(
        name='rmsprop',
        lr=0.165,
        lr_reference_batch_size=256,
        rms_decay=0.9,
        eps=1.0,
        momentum=0.9,
        weight_decay=4e-5,
        grad_clip_norm=2.0,
    )
    recipes.step_schedule(config, range(2, config.num_epochs, 2), factor=0.94)
    config.label_smoothing = 0.1
    config.aux_loss_weight = 0.4
  else:
    config.model = recipes.model(variant, separable_stem=False, dropout_rate=0.0)
    recipes.imagenet(config, image_size=224)
    config.num_epochs = 150
    recipes.sgd(config, lr=0.045, weight_decay=4e-5)
    config.optimizer.lr_reference_batch_size = 32
    every = 4 / 3  # epochs between decays
    recipes.step_schedule(
        config,
        [
            k * every
            for k in range(1, int(config.num_epochs / every) + 1)
            if k * every < config.num_epochs
        ],
        factor=0.96,
    )
  return config
