r"""Convolution forms on the JAX backend: why 1x1 convolutions are matrix products.

    python bench/conv_cpu.py [--runs 5] [--batch 64] [--dtype float32|bfloat16]

Times forward and forward+backward (gradients w.r.t. input and kernel of
sum(y**2)) at ResNet-50 shapes for a 256x128 input:
  * 1x1: flax ``nn.Conv(features, (1, 1))`` against ``PointwiseConv`` (the model's
    form: one dot_general over channels, the same parameters);
  * 3x3: XLA's own convolution gradients against a custom VJP whose kernel
    gradient is an im2col matrix product (the alternative that was measured and
    not adopted).
``--dtype`` is the compute dtype (kernels stay float32 for the 1x1 modules, as
in the model). Each form is compiled alone; median of --runs calls after a warm-up; prints
milliseconds and the ratio to the first form of each pair, and the largest
relative difference of the results (same maths, float rounding only).
"""

import argparse
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from i2v_jax.models.layers import PointwiseConv, conv_init

NHWC = ('NHWC', 'HWIO', 'NHWC')


def timed(fn, *args, runs):
  """(median seconds of a call after a warm-up, the last result)."""
  compiled = jax.jit(fn).lower(*args).compile()
  out = jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(runs):
    t0 = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times), out


def conv3x3(x, k):
  return jax.lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=NHWC)


@jax.custom_vjp
def conv3x3_im2col_grad(x, k):
  return conv3x3(x, k)


def _fwd(x, k):
  return conv3x3(x, k), (x, k)


def _bwd(residuals, g):
  x, k = residuals
  dx, = jax.vjp(lambda x: conv3x3(x, k), x)[1](g)
  h, w = x.shape[1:3]
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  patches = jnp.stack([padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], 3)
  dk = jnp.einsum('nhwpc,nhwo->pco', patches, g).reshape(k.shape)
  return dx, dk


conv3x3_im2col_grad.defvjp(_fwd, _bwd)


def rel_diff(a, b):
  f32 = lambda a: a.astype(jnp.float32)
  return max(float(jnp.abs(f32(u) - f32(v)).max() / jnp.abs(f32(u)).max())
             for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--runs', type=int, default=5)
  parser.add_argument('--batch', type=int, default=64, help='frames (teacher+student: 64)')
  parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
  args = parser.parse_args()
  dtype = jnp.dtype(args.dtype)
  rng = np.random.default_rng(0)
  n = args.batch
  print(f'{jax.devices()[0].device_kind} ({jax.default_backend()}), {args.dtype}, batch {n}, '
        f'median of {args.runs}; ms, ratio to the first form')
  # (H, W, C_in, C_out, stride) of 1x1 convolutions in ResNet-50 at 256x128.
  for h, w, ci, co, s in [(64, 32, 64, 256, 1), (32, 16, 512, 128, 1),
                          (16, 8, 1024, 256, 1), (64, 32, 256, 512, 2)]:
    x = jnp.asarray(rng.standard_normal((n, h, w, ci)), jnp.float32)
    rows = []
    for name, module in (
        ('nn.Conv 1x1', nn.Conv(co, (1, 1), strides=(s, s), padding='VALID', use_bias=False,
                                kernel_init=conv_init, dtype=dtype)),
        ('PointwiseConv', PointwiseConv(co, strides=s, dtype=dtype))):
      v = module.init(jax.random.key(0), x)
      fwd, _ = timed(module.apply, v, x, runs=args.runs)
      both, grads = timed(jax.grad(lambda v, x, m=module: jnp.sum(m.apply(v, x).astype(jnp.float32) ** 2), (0, 1)),
                          v, x, runs=args.runs)
      rows.append((name, fwd, both, grads))
    print_pair(f'1x1 {h}x{w}x{ci}->{co}, stride {s}', rows)
  for h, w, c in [(64, 32, 64), (32, 16, 128), (16, 8, 256), (16, 8, 512)]:
    x = jnp.asarray(rng.standard_normal((n, h, w, c)), dtype)
    k = jnp.asarray(rng.standard_normal((3, 3, c, c)) * 0.01, dtype)
    rows = []
    for name, fn in (('XLA gradients', conv3x3), ('im2col kernel gradient', conv3x3_im2col_grad)):
      fwd, _ = timed(fn, x, k, runs=args.runs)
      both, grads = timed(jax.grad(lambda x, k, fn=fn: jnp.sum(fn(x, k).astype(jnp.float32) ** 2), (0, 1)),
                          x, k, runs=args.runs)
      rows.append((name, fwd, both, grads))
    print_pair(f'3x3 {h}x{w}x{c}->{c}', rows)


def print_pair(title, rows):
  (_, fwd0, both0, grads0) = rows[0]
  print(title)
  for name, fwd, both, grads in rows:
    print(f'  {name:24s} forward {fwd * 1e3:7.1f} ({fwd / fwd0:.2f}x)   '
          f'forward+backward {both * 1e3:7.1f} ({both / both0:.2f}x)   '
          f'max rel. diff {rel_diff(grads0, grads):.1e}')


if __name__ == '__main__':
  main()
