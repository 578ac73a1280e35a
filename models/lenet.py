"""LeNet-5 (LeCun et al. 1998): d2l's modern form (`lenet5`), the paper's own (`lenet5_1998`) and
Caffe's 20-50-500 network (`lenet_caffe`), the "LeNet-5" of the pruning and Deep Compression papers.
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from common.errors import ConfigError
from models import fast_conv, layers
from models.registry import NativeInput, register


class LeNet5(nn.Module):
  """conv 6@5×5 (pad 2) → pool → conv 16@5×5 → pool → dense 120 → 84 → classes.

  `activation='sigmoid', pooling='avg'` is the paper's squashing + subsampling form (as in
  d2l); the defaults `'relu', 'max'` are the form that trains fastest. On 28×28 inputs with
  10 classes and no BatchNorm it has 61,706 parameters. `batch_norm` adds BN after each conv
  and hidden dense layer (d2l §8.5). `pool_window=3, pool_stride=2` makes both pools overlap
  as AlexNet's do (then 13×13 and 4×4 maps, 44,426 parameters). `dropout_rate` drops the
  hidden dense units, with either inference rule (`dropout_scaling`, see `layers.dropout`).
  """

  num_classes: int = 10
  activation: str = 'relu'
  pooling: str = 'max'
  pool_window: int = 2
  pool_stride: int = 2
  batch_norm: bool = False
  dropout_rate: float = 0.0
  dropout_scaling: str = 'train'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    act = layers.activation(self.activation)

    def norm(y: jax.Array, name: str) -> jax.Array:
      if not self.batch_norm:
        return y
      return layers.batch_norm(train, self.dtype, name=name)(y)

    x = x.astype(self.dtype)
    conv = functools.partial(
        nn.Conv, dtype=self.dtype, conv_general_dilated=fast_conv.conv_general_dilated
    )
    x = act(norm(conv(6, (5, 5), padding=2, name='conv1')(x), 'bn1'))
    x = layers.pool(x, self.pooling, self.pool_window, self.pool_stride)
    x = act(norm(conv(16, (5, 5), padding='VALID', name='conv2')(x), 'bn2'))
    x = layers.pool(x, self.pooling, self.pool_window, self.pool_stride)
    x = x.reshape(x.shape[0], -1)
    for i, width in enumerate((120, 84), start=1):
      x = act(norm(nn.Dense(width, dtype=self.dtype, name=f'fc{i}')(x), f'bn_fc{i}'))
      x = layers.dropout(x, self.dropout_rate, train, self.dropout_scaling)
    x = nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)
    return x.astype(jnp.float32)


# --- LeNet-5 of LeCun, Bottou, Bengio & Haffner (1998), §II-B and Appendix A. -------------------

# Table I: the S2 maps that each C3 map reads (columns of the paper's table).
C3_TABLE: tuple[tuple[int, ...], ...] = (
    (0, 1, 2),
    (1, 2, 3),
    (2, 3, 4),
    (3, 4, 5),
    (0, 4, 5),
    (0, 1, 5),  # 3 contiguous
    (0, 1, 2, 3),
    (1, 2, 3, 4),
    (2, 3, 4, 5),
    (0, 3, 4, 5),
    (0, 1, 4, 5),
    (0, 1, 2, 5),  # 4
    (0, 1, 3, 4),
    (1, 2, 4, 5),
    (0, 2, 3, 5),  # 4 non-contiguous
    (0, 1, 2, 3, 4, 5),  # all
)


def scaled_tanh(x: jax.Array) -> jax.Array:
  """The paper's squashing function f(a) = 1.7159 tanh(2a/3) (Appendix A): f(±1) = ±1."""
  return 1.7159 * jnp.tanh(x * (2.0 / 3.0))


def fan_in_uniform(fan_in: int | np.ndarray, paper: bool = False) -> Callable[..., jax.Array]:
  """Uniform init per unit of fan-in F: ±sqrt(3/F) (variance 1/F, LeCun's "Efficient BackProp"
  rule for the scaled tanh) or, with `paper`, Appendix A's ±2.4/F. `fan_in` may be per unit."""

  def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
    f = np.asarray(fan_in, np.float32)
    bound = jnp.asarray(2.4 / f if paper else np.sqrt(3.0 / f), dtype)
    return jax.random.uniform(key, shape, dtype, -1.0, 1.0) * bound

  return init


def rbf_prototypes(num_classes: int, dim: int = 84) -> np.ndarray:
  """Fixed ±1 class codes [num_classes, dim] for the RBF output units (never trained).

  The paper draws them as 7×12 bitmaps of the characters; here, for `dim` = q + 1 with q a prime
  ≡ 3 (mod 4) (84 = 83 + 1) and up to q classes, rows 1.. of Paley's Hadamard matrix: balanced
  (half +1) and mutually orthogonal, so every pair of classes lies at squared distance 2·dim.
  Otherwise ±1 draws from a fixed seed.
  """
  q = dim - 1
  is_prime = q > 2 and all(q % p for p in range(2, int(q**0.5) + 1))
  if not (is_prime and q % 4 == 3 and num_classes <= q):
    return np.random.default_rng(0).choice([-1.0, 1.0], size=(num_classes, dim)).astype(np.float32)
  residues = {(i * i) % q for i in range(1, q)}
  chi = np.array([0] + [1 if a in residues else -1 for a in range(1, q)])
  jacobsthal = chi[(np.arange(q)[None, :] - np.arange(q)[:, None]) % q]  # antisymmetric
  h = np.eye(dim, dtype=np.int64)
  h[0, 1:] += 1
  h[1:, 0] -= 1
  h[1:, 1:] += jacobsthal
  return h[1 : num_classes + 1].astype(np.float32)


class Subsampling(nn.Module):
  """S2/S4: per map, (sum of each 2×2 window) × a trainable coefficient + a trainable bias."""

  window: int = 2
  paper_init: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    maps = x.shape[-1]
    coefficient = self.param(
        'coefficient', fan_in_uniform(self.window**2, self.paper_init), (maps,)
    )
    bias = self.param('bias', nn.initializers.zeros, (maps,))
    total = layers.pool(x, 'avg', self.window, self.window) * self.window**2
    return total * coefficient.astype(self.dtype) + bias.astype(self.dtype)


class TableConv(nn.Module):
  """A VALID convolution in which output map j reads only the input maps `table[j]`.

  Only the connected 5×5 kernels are parameters (`kernel`: [k, k, connections]); they are
  scattered into a dense kernel whose other entries are constant zeros, so unconnected pairs
  have no weights, no gradient and no weight decay. C3: 60 × 25 + 16 = 1,516 parameters.
  """

  table: Sequence[Sequence[int]]
  kernel_size: int = 5
  paper_init: bool = False
  dtype: Any = jnp.float32

  def dense_kernel(self, kernel: jax.Array, in_features: int) -> jax.Array:
    """The [k, k, in, out] kernel with zeros where the table has no connection."""
    inputs = np.array([i for row in self.table for i in row])
    outputs = np.array([j for j, row in enumerate(self.table) for _ in row])
    k = self.kernel_size
    dense = jnp.zeros((k, k, in_features, len(self.table)), kernel.dtype)
    return dense.at[:, :, inputs, outputs].set(kernel)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    fan_in = np.array([len(row) * k * k for row in self.table for _ in row])
    kernel = self.param('kernel', fan_in_uniform(fan_in, self.paper_init), (k, k, len(fan_in)))
    bias = self.param('bias', nn.initializers.zeros, (len(self.table),))
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype),
        self.dense_kernel(kernel, x.shape[-1]).astype(self.dtype),
        (1, 1),
        'VALID',
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    )
    return y + bias.astype(self.dtype)


class LeNet5Paper(nn.Module):
  """LeNet-5 of the 1998 paper: C1-S2-C3-S4-C5-F6 with scaled tanh and an RBF output layer.

  Inputs smaller than `input_size` (28×28 digits) are padded to 32×32 with `pad_value`, the
  paper's background level after its input scaling (background -0.1, ink 1.175). S2/S4 are
  trainable subsampling (window sum × coefficient + bias); C3 follows Table I; C5 is a 5×5
  convolution (1×1 output at 32×32). Every layer squashes with 1.7159 tanh(2a/3). Biases start
  at 0, weights uniform with variance 1/fan-in; `paper_init=True` gives Appendix A's ±2.4/fan-in,
  made for the paper's second-order (diagonal Levenberg-Marquardt) training: plain SGD learns
  more slowly from it.

  `output='rbf'`: Euclidean RBF units with fixed ±1 prototypes (`rbf_prototypes`; the paper's
  7×12 character bitmaps are not reproduced), never trained. Logits are −‖F6 − prototype‖², so
  softmax cross-entropy on them is the paper's MAP criterion (§II-C) without its constant
  "rubbish class" term; as all prototypes have the same norm, the softmax equals that of a fixed
  linear layer 2·prototypes·F6. Those logits span hundreds, so softmax saturates from the start;
  `rbf_temperature` divides them (16 in the digits config: 0.979 eval top-1 there against
  0.964 at 1). `output='dense'`: a trained softmax layer instead. With RBF output the network
  has 60,000 trainable parameters, the sum of §II-B's per-layer counts.
  """

  num_classes: int = 10
  output: str = 'rbf'
  input_size: int = 32
  pad_value: float = -0.1
  paper_init: bool = False
  rbf_temperature: float = 1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train  # no dropout or BatchNorm in the paper's network
    if self.output not in ('rbf', 'dense'):
      raise ConfigError(f'Unknown output {self.output!r}; choose "rbf" or "dense".')
    x = x.astype(self.dtype)
    pad_h, pad_w = (max(self.input_size - size, 0) for size in x.shape[1:3])
    if pad_h or pad_w:
      x = jnp.pad(
          x,
          ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)),
          constant_values=self.pad_value,
      )
    init = self.paper_init

    def conv(features: int, name: str) -> nn.Conv:
      return nn.Conv(
          features,
          (5, 5),
          padding='VALID',
          dtype=self.dtype,
          name=name,
          kernel_init=fan_in_uniform(25 * x.shape[-1], init),
      )

    x = scaled_tanh(conv(6, 'c1')(x))  # 28×28×6
    x = scaled_tanh(Subsampling(paper_init=init, dtype=self.dtype, name='s2')(x))  # 14×14×6
    x = scaled_tanh(TableConv(C3_TABLE, paper_init=init, dtype=self.dtype, name='c3')(x))  # 10×10
    x = scaled_tanh(Subsampling(paper_init=init, dtype=self.dtype, name='s4')(x))  # 5×5×16
    x = scaled_tanh(conv(120, 'c5')(x))  # 1×1×120
    x = x.reshape(x.shape[0], -1)
    x = scaled_tanh(
        nn.Dense(84, dtype=self.dtype, name='f6', kernel_init=fan_in_uniform(x.shape[-1], init))(x)
    )
    if self.output == 'dense':
      return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x).astype(jnp.float32)
    prototypes = jnp.asarray(rbf_prototypes(self.num_classes, x.shape[-1]))
    x = x.astype(jnp.float32)
    return -jnp.sum(jnp.square(x[:, None, :] - prototypes[None]), axis=-1) / self.rbf_temperature


class LeNetCaffe(nn.Module):
  """Caffe's MNIST example network: conv 20@5×5 → pool → conv 50@5×5 → pool → dense 500 → classes.

  The network that Han et al. (NeurIPS 2015) and Han, Mao & Dally (ICLR 2016, Deep Compression)
  call "LeNet-5": 431,080 parameters on 28×28 digits, 1,720 KB in float32. As in Caffe's
  `lenet_train_test.prototxt`, the convolutions have no non-linearity (only the 500-unit layer
  has a ReLU) and pooling is 2×2 max with stride 2. Caffe flattens channel-major (C, H, W) and we
  flatten (H, W, C), which permutes the rows of `fc1` and computes the same function.
  """

  num_classes: int = 10
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train  # no dropout or BatchNorm in Caffe's network
    x = x.astype(self.dtype)
    x = nn.Conv(20, (5, 5), padding='VALID', dtype=self.dtype, name='conv1')(x)  # 24×24×20
    x = layers.pool(x, 'max', 2, 2)
    x = nn.Conv(50, (5, 5), padding='VALID', dtype=self.dtype, name='conv2')(x)  # 8×8×50
    x = layers.pool(x, 'max', 2, 2)
    x = nn.relu(nn.Dense(500, dtype=self.dtype, name='fc1')(x.reshape(x.shape[0], -1)))
    return nn.Dense(self.num_classes, dtype=self.dtype, name='fc2')(x).astype(jnp.float32)


register(
    'lenet5',
    LeNet5,
    reference="d2l.ai's LeNet, ReLU and max pooling by default",
    params=61_706,
    native_input=NativeInput(28, 1, 10),
)
register(
    'lenet5_1998',
    LeNet5Paper,
    reference='LeCun et al. 1998 §II-B and Appendix A (RBF output)',
    params=60_000,
    native_input=NativeInput(32, 1, 10),
)
register(
    'lenet_caffe',
    LeNetCaffe,
    reference="Caffe's examples/mnist/lenet_train_test.prototxt (Han et al. 2015, 2016's LeNet-5)",
    params=431_080,
    native_input=NativeInput(28, 1, 10),
)
