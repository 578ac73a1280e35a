"""Compression of Caffe's LeNet-5 (`lenet_caffe`, 431,080 parameters) on handwritten digits.

Train the original once, then compress it with any method (each writes compression.md/.json/.png
into its workdir, and its fine-tuning stages as sub-workdirs):

  python main.py --config=configs/lenet5_mnist.py:lenet_caffe --workdir=runs/lenet_caffe
  python main.py --mode=compress --config=configs/compression.py:deep_compression \\
      --workdir=runs/deep_compression
  python main.py --mode=compress --config=configs/compression.py:ptq --workdir=runs/ptq
  # any trained run: the config that trained it, the method and the run
  python main.py --mode=compress --config=configs/resnet_cifar10.py:resnet20 \\
      --config.compression.method=filter_prune --config.init_from=runs/resnet20 ...

Methods (`compression.method`): deep_compression (Han, Mao & Dally 2016: prune, k-means weight
sharing, Huffman coding), prune (gradual magnitude pruning), filter_prune (L1 filter pruning that
rebuilds a narrower model), low_rank (truncated SVD of dense layers, factorised convolutions),
ptq (qwix int8 post-training quantization), qat (quantization-aware training), kmeans (weight
sharing alone), pq (product quantization of dense layers), binary (±1 weights, Htanh
straight-through gradient), distill (knowledge distillation into a smaller student).

Measured on the offline digits (original: 0.980 top-1, 1,724 kB; docs/compression.md has all):
deep_compression 0.977 at 44.6 kB (38.7× smaller; the paper: 39×), prune 0.973 at 90 % sparsity,
filter_prune 0.985 with 3.5× fewer MACs, low_rank 0.980, ptq 0.980 at 4.0× smaller, qat (int4)
0.982 at 7.8×, kmeans 0.978, pq 0.978, binary 0.974 at 21.7×, distill 0.933 against 0.808 for
the same student alone.
"""

import ml_collections

from configs import lenet5_mnist, recipes

VARIANTS = (
    'deep_compression',
    'prune',
    'filter_prune',
    'low_rank',
    'ptq',
    'qat',
    'kmeans',
    'pq',
    'binary',
    'distill',
)
DATASETS = ('offline_digits', 'mnist')

# Deep Compression's LeNet-5 (Han et al. 2015, Table 2): the fraction of each layer's weights kept.
PAPER_KEPT = {'conv1': 0.66, 'conv2': 0.12, 'fc1': 0.08, 'fc2': 0.19}
STUDENT_WIDTHS = {'conv1': 4, 'conv2': 8, 'fc1': 32}  # distill: Caffe's LeNet at 4-8-32


def get_config(arg=None) -> ml_collections.ConfigDict:
  """`arg`: 'method[,dataset]' from VARIANTS and DATASETS, e.g. 'ptq,mnist'."""
  method, dataset = recipes.parse_arg(arg, VARIANTS, DATASETS)
  config = lenet5_mnist.get_config(f'lenet_caffe,{dataset}')
  original = 'runs/lenet_caffe' if dataset == 'offline_digits' else f'runs/lenet_caffe_{dataset}'
  config.init_from = original
  c = config.compression
  c.method = method
  # Fine-tuning: 30 epochs of the 4,000 offline digits at the original learning rate (at 1/10 of
  # it, Deep Compression lost 1.7 points here instead of 0.3).
  c.finetune_steps = 1860
  c.finetune_lr_scale = 1.0
  if method in ('deep_compression', 'prune'):
    config.pruning.frequency = 50
    config.pruning.end_step = 1240  # the last third fine-tunes at the final sparsity
  if method == 'deep_compression':
    config.pruning.layer_sparsity = ','.join(
        f'{layer}/.*={1 - kept:.2f}' for layer, kept in PAPER_KEPT.items()
    )
    c.conv_bits, c.dense_bits = 8, 5  # the paper's widths of the shared weights
  elif method == 'prune':
    config.pruning.sparsity = 0.9
  elif method == 'filter_prune':
    c.fraction = 0.5
  elif method == 'low_rank':
    c.layers = 'fc1'
    c.fraction = 0.1
  elif method == 'qat':
    c.bits = 4
  elif method in ('ptq', 'kmeans', 'pq'):
    c.finetune_steps = 0
    c.layers = 'fc1' if method == 'pq' else ''
  elif method == 'distill':
    # The student: Caffe's LeNet with 4-8-32 instead of 20-50-500 channels (5,370 parameters,
    # 80× fewer), trained from scratch on the original's schedule, alone and from the teacher,
    # on a tenth of the training images (the teacher saw them all): where labels are few, soft
    # targets carry most (Hinton et al. 2015, §6). On all of them the gain is within the noise.
    config.init_from = ''
    config.distill.teacher = original
    config.dataset.train_split = 'train[:10%]'
    config.model = recipes.model('lenet_caffe', pruned_widths=STUDENT_WIDTHS)
  return config
