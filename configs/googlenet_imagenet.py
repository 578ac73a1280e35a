"""GoogLeNet (Inception v1) on ImageNet with the paper's schedule (Szegedy et al. 2015, §6).

  python main.py --config=configs/googlenet_imagenet.py --workdir=runs/googlenet
  python main.py --config=configs/googlenet_imagenet.py:googlenet_paper \
      --workdir=runs/googlenet_paper
  # without the auxiliary classifiers:
  python main.py --config=configs/googlenet_imagenet.py --config.model.aux_logits=False ...

`googlenet` is torchvision's layout (BN after every conv), `googlenet_paper` the paper's (LRN,
true 5×5 convs, no BN; see models/googlenet.py), `googlenet_naive` the paper's built from
Fig. 2a's naive modules (no 1×1 reductions: 104.3 M parameters and 12.57 G MACs against 13.4 M
and 1.58 G; no published result). Recipe: SGD momentum 0.9, lr lowered 4 %
every 8 epochs (step schedule, factor 0.96), auxiliary losses weighted 0.3, dropout 0.4 before
the classifier in the paper (0.2 in torchvision's) and 0.7 in the auxiliary heads. The paper
trains with asynchronous SGD on many machines and gives no batch size, base lr, weight decay
or length; those come from Caffe's bvlc_googlenet solver.prototxt (batch 32, lr 0.01, step
every 320,000 iterations ≈ 8 epochs, weight decay 2e-4 not on biases, 10M iterations ≈ 250
epochs), with the lr scaled linearly to this batch size. Training crops are the paper's:
8–100 % of the image area, aspect ratio in [3/4, 4/3], with flips. Not reproduced: its
photometric distortions (color_jitter can stand in), Polyak averaging, and its 144-crop testing
(ten_crop gives AlexNet's ten views).

Paper: 6.67 % top-5 error on the ILSVRC 2014 test set (7 models, 144 crops each); one model
with one crop: 10.07 % top-5 error (Table 5). Caffe's bvlc_googlenet replication reports
68.7 % top-1 / 88.9 % top-5 with one centre crop after 60 epochs of its quick solver. Not
measured here.
"""

import ml_collections

from configs import default, recipes

VARIANTS = ('googlenet', 'googlenet_paper', 'googlenet_naive')
DATASETS = ('imagenet2012',)


def get_config(arg=None) -> ml_collections.ConfigDict:
  """`arg`: 'variant[,dataset]' from VARIANTS and DATASETS."""
  variant, _ = recipes.parse_arg(arg, VARIANTS, DATASETS)
  config = default.get_config()
  config.model = recipes.model(
      variant,
      aux_logits=True,
      dropout_rate=0.2 if variant == 'googlenet' else 0.4,
      aux_dropout_rate=0.7,
  )
  recipes.imagenet(config, image_size=224)
  config.aux_loss_weight = 0.3
  config.batch_size = 256
  config.num_epochs = 250
  recipes.sgd(config, lr=0.01, weight_decay=2e-4)
  config.optimizer.lr_reference_batch_size = 32  # Caffe's batch: lr 0.08 at 256
  recipes.step_schedule(config, range(8, config.num_epochs, 8), factor=0.96)
  config.log_every_steps = 100
  return config
