"""Times one convolution's forward + backward (input and weight gradients) on XLA's CPU backend,
formulated several ways, to find where the backward pass of a CNN's train step loses.

  XLA_FLAGS='--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1' \
      taskset -c 0 python -m benchmarks.conv_grad [--rounds=7] [--reps=5] \
      [--only=regular|depthwise|maxpool]

Each variant is jitted, warmed up, then timed in interleaved rounds (every variant once per
round, `reps` calls each); the best round per variant is kept, and the ratio to lax's own
gradient (`lax`) printed. Interleaving keeps the ratios fair on a shared, noisy machine.

Measured (one core, batch 128, load average 3.5–4.0 on 2 shared cores; ms per forward + both
gradients, ratio to lax; `--rounds 5 --reps 3`, depthwise `--rounds 5 --reps 2`):

  layer                      lax     im2col          shifted        stacked
  32x32x16->16 3x3 s1       37.7    181.0 (0.21x)   112.7 (0.33x)  191.3 (0.20x)
  32x32x16->32 3x3 s2       25.1     39.0 (0.64x)    24.5 (1.03x)   53.1 (0.47x)
  16x16x32->32 3x3 s1       18.2     88.4 (0.21x)    53.3 (0.34x)   89.3 (0.20x)
  8x8x64->64   3x3 s1       15.4     30.6 (0.50x)    12.0 (1.28x)   36.7 (0.42x)
  16x16x32->64 1x1 s2        4.0      6.7 (0.59x)     1.1 (3.50x)    0.9 (4.29x)
  depthwise 32x32x96  s1   968.9                    259.6 (3.73x)
  depthwise 32x32x144 s2  3542.0                    233.7 (15.2x)
  depthwise 16x16x192 s1   780.0                    270.0 (2.89x)
  depthwise 56x56x144 s1 12884.9                   1768.6 (7.29x)

`sliced` (fast_conv.fast_grad_conv: lax's, the weight gradient summed over slices of 16
images), a later run (`--only=regular --rounds=5 --reps=3`, a test run on the other core), ms and
ratio to that run's lax: 34.97 (1.08x), 23.54 (1.21x), 24.71 (1.08x), 20.56 (1.16x), 4.84 (1.20x).

PyTorch 2.14 eager, channels-last, one thread, same layers: 19.8, 16.1, 18.7, 13.2, 3.0 ms;
depthwise 119.5, 85.6, 27.4, 525.3 ms. So for full convs lax's weight gradient, summed over
slices of the batch, is the fastest formulation here (im2col materialises 9× the activation;
XLA's dot with a huge contraction and 16-wide outputs runs at ~6 GMAC/s); the rest of what a
ResNet-20 step loses is outside the layer: in the step, XLA fuses the recomputation of several
blocks' BN + ReLU + residual chain into the transposes that feed the weight-gradient convs (one
such `transpose_copy_fusion` took 73 ms of a 725 ms step), and `lax.optimization_barrier`
cannot stop it (XLA's CPU pipeline expands barriers into control edges before fusion).
Depthwise convs are the clear win: models/fast_conv.py.
"""

import argparse
import functools
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models import fast_conv

DN = ('NHWC', 'HWIO', 'NHWC')


def lax_conv(x, w, strides, padding, groups=1):
  return jax.lax.conv_general_dilated(
      x, w, strides, padding, dimension_numbers=DN, feature_group_count=groups
  )


def explicit(padding, kernel, strides, in_hw):
  """lax's padding (a string or pairs) as explicit pairs."""
  if not isinstance(padding, str):
    return tuple(tuple(p) for p in padding)
  return tuple(jax.lax.padtype_to_pads(in_hw, kernel, strides, padding))


def dw_im2col(x, g, kernel, strides, padding):
  """Weight gradient as patches (N·H'·W', C·kh·kw)ᵀ @ g (N·H'·W', O)."""
  kh, kw = kernel
  c, o = x.shape[-1], g.shape[-1]
  patches = jax.lax.conv_general_dilated_patches(
      x, kernel, strides, padding, dimension_numbers=DN
  )  # (N, H', W', C·kh·kw), feature order (c, kh, kw)
  dw = jnp.dot(patches.reshape(-1, c * kh * kw).T, g.reshape(-1, o))
  return dw.reshape(c, kh, kw, o).transpose(1, 2, 0, 3)


def shifted(x, kernel, strides, padding, out_hw):
  """The kh·kw strided windows of padded x that meet each output position: [(i, j, window)]."""
  pads = explicit(padding, kernel, strides, x.shape[1:3])
  xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
  sh, sw = strides
  ho, wo = out_hw
  out = []
  for i in range(kernel[0]):
    for j in range(kernel[1]):
      out.append(
          (
              i,
              j,
              jax.lax.slice(
                  xp,
                  (0, i, j, 0),
                  (xp.shape[0], i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, xp.shape[3]),
                  (1, sh, sw, 1),
              ),
          )
      )
  return out


def dw_shifted(x, g, kernel, strides, padding):
  """Weight gradient as kh·kw matmuls of a shifted window of x against g, contracting N·H'·W'."""
  c, o = x.shape[-1], g.shape[-1]
  g2 = g.reshape(-1, o)
  taps = [
      jnp.dot(win.reshape(-1, c).T, g2)
      for _, _, win in shifted(x, kernel, strides, padding, g.shape[1:3])
  ]
  return jnp.stack(taps).reshape(kernel[0], kernel[1], c, o)


def dw_dot_general(x, g, kernel, strides, padding):
  """Weight gradient as one dot_general over stacked windows (N, H', W', taps, C)."""
  c, o = x.shape[-1], g.shape[-1]
  wins = jnp.stack([w for _, _, w in shifted(x, kernel, strides, padding, g.shape[1:3])], axis=3)
  dw = jnp.einsum('nhwtc,nhwo->tco', wins, g)
  return dw.reshape(kernel[0], kernel[1], c, o)


def custom_conv(dw_fn, strides, padding):
  """lax's forward and input gradient, `dw_fn`'s weight gradient."""

  @jax.custom_vjp
  def conv(x, w):
    return lax_conv(x, w, strides, padding)

  def fwd(x, w):
    return conv(x, w), (x, w)

  def bwd(res, g):
    x, w = res
    _, vjp_x = jax.vjp(lambda x_: lax_conv(x_, w, strides, padding), x)
    return vjp_x(g)[0], dw_fn(x, g, w.shape[:2], strides, padding)

  conv.defvjp(fwd, bwd)
  return conv


def depthwise_shifted(x, w, strides, padding):
  """Depthwise conv as kh·kw multiply-adds of shifted windows (w: kh, kw, 1, C); jax's own
  gradients of slices, products and sums."""
  out_hw = jax.eval_shape(lambda: lax_conv(x, w, strides, padding, x.shape[-1])).shape[1:3]
  y = None
  for i, j, win in shifted(x, w.shape[:2], strides, padding, out_hw):
    term = win * w[i, j, 0]
    y = term if y is None else y + term
  return y


def grad_fn(conv):
  """(x, w, cotangent) → (dx, dw), jitted."""

  @jax.jit
  def f(x, w, ct):
    y, vjp = jax.vjp(conv, x, w)
    return vjp(ct)

  return f


def time_variants(variants, args, rounds, reps):
  """{name: best seconds per call}, timed in interleaved rounds."""
  for f in variants.values():
    jax.block_until_ready(f(*args))
    jax.block_until_ready(f(*args))
  best = dict.fromkeys(variants, float('inf'))
  for _ in range(rounds):
    for name, f in variants.items():
      start = time.perf_counter()
      for _ in range(reps):
        out = f(*args)
      jax.block_until_ready(out)
      best[name] = min(best[name], (time.perf_counter() - start) / reps)
  return best


def check(variants, args):
  """Every variant's gradients equal the first one's (float32 tolerance, atol scaled)."""
  ref = jax.tree.leaves(next(iter(variants.values()))(*args))
  for name, f in variants.items():
    for a, b in zip(ref, jax.tree.leaves(f(*args)), strict=True):
      a, b = np.asarray(a), np.asarray(b)
      np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * np.abs(a).max(), err_msg=name)


REGULAR = [  # (H, C_in, C_out, kernel, stride): ResNet-20's convs at batch 128
    (32, 16, 16, 3, 1),
    (32, 16, 32, 3, 2),
    (16, 32, 32, 3, 1),
    (8, 64, 64, 3, 1),
    (16, 32, 64, 1, 2),
]
MAX_POOLS = [  # (batch, H, C, window, stride, padding): LeNet-5, AlexNet, VGG, ResNet, GoogLeNet
    (128, 28, 6, 2, 2, 0),
    (32, 55, 64, 3, 2, 0),
    (32, 56, 128, 2, 2, 0),
    (32, 112, 64, 3, 2, 1),
    (32, 28, 192, 3, 1, 1),
]
DEPTHWISE = [  # (H, C, kernel, stride): MobileNet v2's depthwise convs
    (32, 96, 3, 1),
    (32, 144, 3, 2),
    (16, 192, 3, 1),
    (56, 144, 3, 1),
]


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--rounds', type=int, default=7)
  parser.add_argument('--reps', type=int, default=5)
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--only', default='')
  a = parser.parse_args()
  key = jax.random.key(0)
  print(f'backend {jax.default_backend()}, batch {a.batch}')
  if a.only in ('', 'regular'):
    for h, cin, cout, k, s in REGULAR:
      strides, padding = (s, s), ((k // 2, k // 2),) * 2
      x = jax.random.normal(key, (a.batch, h, h, cin))
      w = jax.random.normal(key, (k, k, cin, cout)) * 0.1
      ho = (h + 2 * (k // 2) - k) // s + 1
      ct = jax.random.normal(key, (a.batch, ho, ho, cout))
      base = functools.partial(lax_conv, strides=strides, padding=padding)
      variants = {
          'lax': grad_fn(base),
          'im2col': grad_fn(custom_conv(dw_im2col, strides, padding)),
          'shifted': grad_fn(custom_conv(dw_shifted, strides, padding)),
          'stacked': grad_fn(custom_conv(dw_dot_general, strides, padding)),
          'sliced': grad_fn(
              lambda x, w, s=strides, p=padding: fast_conv.fast_grad_conv(x, w, s, p)
          ),
      }
      check(variants, (x, w, ct))
      best = time_variants(variants, (x, w, ct), a.rounds, a.reps)
      row = '  '.join(f'{n} {t * 1e3:7.2f}ms ({best["lax"] / t:4.2f}x)' for n, t in best.items())
      print(f'{h}x{h}x{cin}->{cout} k{k} s{s}: {row}', flush=True)
  if a.only in ('', 'depthwise'):
    for h, c, k, s in DEPTHWISE:
      strides, padding = (s, s), ((k // 2, k // 2),) * 2
      x = jax.random.normal(key, (a.batch, h, h, c))
      w = jax.random.normal(key, (k, k, 1, c)) * 0.1
      ho = (h + 2 * (k // 2) - k) // s + 1
      ct = jax.random.normal(key, (a.batch, ho, ho, c))
      variants = {
          'lax': grad_fn(functools.partial(lax_conv, strides=strides, padding=padding, groups=c)),
          'shifted': grad_fn(
              functools.partial(depthwise_shifted, strides=strides, padding=padding)
          ),
      }
      check(variants, (x, w, ct))
      best = time_variants(variants, (x, w, ct), a.rounds, a.reps)
      row = '  '.join(f'{n} {t * 1e3:7.2f}ms ({best["lax"] / t:4.2f}x)' for n, t in best.items())
      print(f'depthwise {h}x{h}x{c} k{k} s{s}: {row}', flush=True)
  if a.only in ('', 'maxpool'):
    for n, h, c, k, s, p in MAX_POOLS:
      x = jax.random.normal(key, (n, h, h, c))
      pool_args = ((k, k), (s, s), ((p, p), (p, p)))
      ho = (h + 2 * p - k) // s + 1
      ct = jax.random.normal(key, (n, ho, ho, c))
      variants = {
          name: grad_fn(lambda x, _, fn=fn, pool_args=pool_args: fn(x, *pool_args))
          for name, fn in (('lax', nn.max_pool), ('shifted', fast_conv.max_pool))
      }
      check(variants, (x, None, ct))
      best = time_variants(variants, (x, None, ct), a.rounds, a.reps)
      row = '  '.join(f'{n} {t * 1e3:7.2f}ms ({best["lax"] / t:4.2f}x)' for n, t in best.items())
      print(f'max pool {n}x{h}x{h}x{c} {k}x{k}/{s} pad {p}: {row}', flush=True)


if __name__ == '__main__':
  main()
