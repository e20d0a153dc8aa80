"""Teacher, student, non-local block: shapes at full size, behaviour at tiny size."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import base
from i2v_jax.models import StudentNet, TeacherNet, build_models
from i2v_jax.models.layers import PointwiseConv, conv_init
from i2v_jax.models.nonlocal_block import NonLocalBlock

TINY = dict(stage_sizes=(1, 2, 2, 1), width=8, num_classes=5)
TINY_NL = ((), (1,), (0, 1), ())


def test_resnet50_teacher_and_student_shapes_at_256x128():
  config = base.get_config()  # mdkt: ResNet-50, non-local on, T=4
  teacher, student = build_models(config.model, num_classes=625)
  clips = jax.ShapeDtypeStruct((2, 4, 256, 128, 3), jnp.float32)
  images = jax.ShapeDtypeStruct((8, 256, 128, 3), jnp.float32)

  def run(clips, images):
    tv = teacher.init(jax.random.key(0), clips, train=False)
    sv = student.init(jax.random.key(1), images, train=False)
    t_out, _ = teacher.apply(tv, clips, train=True, mutable=['batch_stats'])
    s_out, _ = student.apply(sv, images, train=True, mutable=['batch_stats'])
    return tv, sv, t_out, s_out

  tv, sv, t_out, s_out = jax.eval_shape(run, clips, images)
  assert t_out['frame_features'].shape == (2, 4, 2048)
  for out, b in ((t_out, 2), (s_out, 8)):
    assert out['features'].shape == (b, 2048)
    assert out['bn_features'].shape == (b, 2048)
    assert out['logits'].shape == (b, 625)
    assert all(v.dtype == jnp.float32 for v in out.values())
  count = lambda tree: sum(x.size for x in jax.tree.leaves(tree))
  assert count(sv['params']['backbone']) == 23_508_032
  backbone = tv['params']['backbone']
  nonlocal_blocks = sorted(k for k in backbone if k.endswith('_nonlocal'))
  assert nonlocal_blocks == ['layer2_1_nonlocal', 'layer2_3_nonlocal',
                             'layer3_1_nonlocal', 'layer3_3_nonlocal',
                             'layer3_5_nonlocal']
  # theta/phi/g map C -> C/2; W maps back.
  nl = backbone['layer3_5_nonlocal']
  assert nl['theta']['kernel'].shape == (1, 1, 1024, 512)
  assert nl['W']['kernel'].shape == (1, 1, 512, 1024)
  # BN-neck has no bias; classifier has no bias.
  assert set(sv['params']['head']['bnneck']) == {'scale'}
  assert set(sv['params']['head']['classifier']) == {'kernel'}


@pytest.mark.parametrize('strides,use_bias,dtype,size', [
    (1, False, jnp.float32, (6, 4)), (2, False, jnp.float32, (7, 5)),
    (1, True, jnp.float32, (6, 4)), (2, True, jnp.bfloat16, (6, 4))])
def test_pointwise_conv_is_flax_1x1_conv(strides, use_bias, dtype, size):
  """Same parameter tree and initial values as nn.Conv(features, (1, 1)) of the
  same name, and the same outputs and gradients (odd sizes: a strided 1x1 conv
  keeps pixels 0, s, 2s, ...)."""
  x = jnp.asarray(np.random.default_rng(0).standard_normal((3,) + size + (8,)), jnp.float32)
  ours = PointwiseConv(5, strides=strides, use_bias=use_bias, dtype=dtype, name='c')
  flax_conv = nn.Conv(5, (1, 1), strides=(strides, strides), padding='VALID',
                      use_bias=use_bias, kernel_init=conv_init, dtype=dtype,
                      param_dtype=jnp.float32, name='c')
  v_ours, v_flax = ours.init(jax.random.key(3), x), flax_conv.init(jax.random.key(3), x)
  assert jax.tree.structure(v_ours) == jax.tree.structure(v_flax)
  for a, b in zip(jax.tree.leaves(v_ours), jax.tree.leaves(v_flax)):
    np.testing.assert_array_equal(a, b)
  v = jax.tree.map(lambda a: a + 0.5, v_flax)  # a non-zero bias too
  y_ours, y_flax = ours.apply(v, x), flax_conv.apply(v, x)
  assert y_ours.shape == y_flax.shape and y_ours.dtype == y_flax.dtype == dtype
  tol = 2e-2 if dtype == jnp.bfloat16 else 1e-5
  np.testing.assert_allclose(np.asarray(y_ours, np.float32), np.asarray(y_flax, np.float32),
                             rtol=tol, atol=tol)
  grad = lambda model: jax.grad(
      lambda v, x: jnp.sum(jnp.sin(model.apply(v, x).astype(jnp.float32))), (0, 1))(v, x)
  for a, b in zip(jax.tree.leaves(grad(ours)), jax.tree.leaves(grad(flax_conv))):
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                               rtol=tol, atol=tol * max(1.0, float(np.abs(b).max())))


def test_tiny_teacher_and_student_forward_and_backward():
  teacher = TeacherNet(nonlocal_after=TINY_NL, **TINY)
  student = StudentNet(**TINY)
  rng = np.random.default_rng(0)
  clips = jnp.asarray(rng.standard_normal((2, 3, 32, 16, 3)), jnp.float32)
  images = clips[:, :2].reshape(4, 32, 16, 3)
  labels = jnp.asarray([0, 3])
  tv = jax.jit(lambda x: teacher.init(jax.random.key(0), x, train=False))(clips)
  sv = jax.jit(lambda x: student.init(jax.random.key(1), x, train=False))(images)

  for model, variables, x, y in ((teacher, tv, clips, labels),
                                 (student, sv, images, jnp.repeat(labels, 2))):
    def loss_fn(params, x, y, model=model, stats=variables['batch_stats']):
      out, updates = model.apply({'params': params, 'batch_stats': stats},
                                 x, train=True, mutable=['batch_stats'])
      logp = jax.nn.log_softmax(out['logits'])
      return -jnp.mean(jnp.take_along_axis(logp, y[:, None], 1)), (out, updates)

    (loss, (out, updates)), grads = jax.jit(
        jax.value_and_grad(loss_fn, has_aux=True))(variables['params'], x, y)
    assert np.isfinite(loss)
    leaves = jax.tree.leaves(grads)
    assert all(np.all(np.isfinite(g)) for g in leaves)
    assert np.abs(grads['backbone']['conv1']['kernel']).max() > 0
    # Batch statistics moved.
    before = variables['batch_stats']['backbone']['bn1']['mean']
    after = updates['batch_stats']['backbone']['bn1']['mean']
    assert np.abs(np.asarray(after) - np.asarray(before)).max() > 0
  assert out['features'].shape == (4, 256)  # 8 * 2**3 * 4


def _perturbed(variables, seed=0):
  """Non-local output BN scales set non-zero so the blocks do something."""
  rng = np.random.default_rng(seed)
  def bump(path, x):
    names = [getattr(p, 'key', '') for p in path]
    if 'W_bn' in names and names[-1] == 'scale':
      return jnp.asarray(rng.uniform(0.5, 1.5, x.shape), x.dtype)
    return x
  return jax.tree_util.tree_map_with_path(bump, variables)


def test_nonlocal_block_is_identity_at_init_and_mixes_frames_after():
  block = NonLocalBlock()
  x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 3, 6, 4, 16)), jnp.float32)
  variables = block.init(jax.random.key(0), x, train=False)
  np.testing.assert_array_equal(block.apply(variables, x, train=False), x)
  variables = _perturbed(variables)
  y = block.apply(variables, x, train=False)
  x2 = x.at[:, 2].add(1.0)  # change frame 2 only
  y2 = block.apply(variables, x2, train=False)
  # Frame 0 sees frame 2 through attention; clip 0 does not see clip 1.
  assert np.abs(np.asarray(y2[:, 0] - y[:, 0])).max() > 1e-4
  x3 = x.at[1].add(1.0)
  np.testing.assert_allclose(block.apply(variables, x3, train=False)[0], y[0], atol=1e-6)


def test_frame_mask_makes_padding_invisible():
  teacher = TeacherNet(nonlocal_after=TINY_NL, **TINY)
  rng = np.random.default_rng(2)
  clip = jnp.asarray(rng.standard_normal((1, 3, 32, 16, 3)), jnp.float32)
  padded = jnp.concatenate([clip, 10 * jnp.ones((1, 2, 32, 16, 3))], axis=1)
  mask = jnp.asarray([[True, True, True, False, False]])
  variables = _perturbed(
      jax.jit(lambda x: teacher.init(jax.random.key(0), x, train=False))(clip))
  apply = jax.jit(lambda v, x, m=None: teacher.apply(v, x, train=False, frame_mask=m))
  ref = apply(variables, clip)
  got = apply(variables, padded, mask)
  np.testing.assert_allclose(got['features'], ref['features'], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got['frame_features'][:, :3], ref['frame_features'],
                             rtol=1e-5, atol=1e-6)
  unmasked = apply(variables, padded)
  assert np.abs(np.asarray(unmasked['features'] - ref['features'])).max() > 1e-3


def test_nonlocal_switch_and_bad_placement():
  config = base.get_config('runlocal')
  teacher, _ = build_models(config.model, num_classes=3)
  assert teacher.nonlocal_after == ((), (0,), (0,), ())
  config.model.nonlocal_blocks.enabled = False
  teacher, _ = build_models(config.model, num_classes=3)
  assert teacher.nonlocal_after == ((), (), (), ())
  config.model.nonlocal_blocks.enabled = True
  config.model.nonlocal_blocks.layer3 = (0, 4)
  with pytest.raises(ValueError, match=r'nonlocal_blocks.layer3=\(0, 4\).*\[4\]'):
    build_models(config.model, num_classes=3)


def test_bfloat16_compute_keeps_float32_params_and_outputs():
  cfg = ml_collections.ConfigDict(base.get_config('runlocal').model.to_dict())
  cfg.dtype = 'bfloat16'
  teacher, student = build_models(cfg, num_classes=3)
  clips = jnp.ones((2, 2, 32, 16, 3))
  variables = jax.jit(lambda x: teacher.init(jax.random.key(0), x, train=False))(clips)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
  out = jax.jit(lambda v, x: teacher.apply(v, x, train=False))(variables, clips)
  assert out['features'].dtype == jnp.float32
  assert np.all(np.isfinite(out['features']))
