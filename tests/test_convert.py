"""torchvision -> Flax conversion: parity on a committed fixture, and failure paths."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from i2v_jax.models import ResNet, StudentNet
from i2v_jax.models import convert
from tests.fixtures.seeded_resnet import seeded_input, seeded_state_dict

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures')


@pytest.fixture(scope='module')
def parity():
  with open(os.path.join(FIXTURES, 'resnet50_parity.json')) as f:
    meta = json.load(f)
  expected = np.load(os.path.join(FIXTURES, 'resnet50_parity.npz'))['features']
  state = seeded_state_dict(meta['key_shapes'], meta['seed'])
  return meta, state, expected


def test_resnet50_matches_torchvision(parity):
  meta, state, expected = parity
  variables = convert.from_torchvision(state)
  x = seeded_input(tuple(meta['input_shape']), meta['seed']).transpose(0, 2, 3, 1)
  model = ResNet(last_stride=2)
  out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  rel = np.linalg.norm(np.asarray(out) - expected) / np.linalg.norm(expected)
  assert out.shape == (2, 2048)
  assert rel <= 1e-4, rel


def test_converted_tree_matches_model_tree(parity):
  _, state, _ = parity
  variables = convert.from_torchvision(state)
  shapes = jax.eval_shape(
      lambda: ResNet().init(jax.random.key(0), jnp.zeros((1, 64, 32, 3)), train=False))
  for collection in ('params', 'batch_stats'):
    got = jax.tree.map(lambda a: a.shape, variables[collection])
    want = jax.tree.map(lambda a: a.shape, shapes[collection])
    assert got == want
  n = sum(a.size for a in jax.tree.leaves(variables['params']))
  assert n == 23_508_032


def test_npz_round_trip_and_merge_into_student(parity, tmp_path):
  _, state, _ = parity
  path = str(tmp_path / 'r50.npz')
  convert.save_npz(convert.from_torchvision(state), path)
  assert os.listdir(tmp_path) == ['r50.npz']  # no temporary left behind
  loaded = convert.load_npz(path)
  student = StudentNet(num_classes=7)
  variables = jax.eval_shape(
      lambda: student.init(jax.random.key(0), jnp.zeros((1, 64, 32, 3)), train=False))
  variables = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), variables)
  merged = convert.merge_backbone(variables, loaded)
  np.testing.assert_array_equal(
      merged['params']['backbone']['layer3_5']['conv2']['kernel'],
      state['layer3.5.conv2.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(
      merged['batch_stats']['backbone']['bn1']['var'], state['bn1.running_var'])
  # The head is untouched.
  assert not np.any(merged['params']['head']['classifier']['kernel'])


@pytest.mark.parametrize('key', ['layer5.0.conv1.weight', 'classifier.weight',
                                 'layer1.0.conv1.bias'])
def test_unknown_key_is_named(key):
  with pytest.raises(KeyError, match=key.replace('.', r'\.')):
    convert.from_torchvision({key: np.zeros((1, 1, 1, 1))})


def test_width_mismatch_names_key(parity):
  _, state, _ = parity
  small = StudentNet(stage_sizes=(3, 4, 6, 3), width=16, num_classes=3)
  variables = jax.eval_shape(
      lambda: small.init(jax.random.key(0), jnp.zeros((1, 64, 32, 3)), train=False))
  with pytest.raises(ValueError, match=r'params/conv1/kernel.*config.model.width'):
    convert.merge_backbone(variables, convert.from_torchvision(state))


def test_missing_file_says_how_to_make_it(tmp_path):
  with pytest.raises(convert.PretrainedError, match='i2v_jax.models.convert'):
    convert.load_npz(str(tmp_path / 'nope.npz'))


def test_a_pretrained_file_must_be_plain_finite_arrays(tmp_path):
  """Faults E: NaN weights, pickled objects and a truncated file are one line each."""
  good = {'params': {'conv1': {'kernel': np.ones((3, 3, 3, 4), np.float32)}}}
  path = str(tmp_path / 'w.npz')
  convert.save_npz(good, path)
  assert convert.load_npz(path)['params']['conv1']['kernel'].shape == (3, 3, 3, 4)
  with open(path, 'rb') as f:
    data = f.read()
  with open(path, 'wb') as f:
    f.write(data[:len(data) // 2])
  with pytest.raises(convert.PretrainedError, match='not a readable .npz'):
    convert.load_npz(path)
  bad = np.ones((2, 2), np.float32)
  bad[0, 1] = np.nan
  np.savez(path, **{'params/conv1/kernel': bad})
  with pytest.raises(convert.PretrainedError, match='params/conv1/kernel has 1 non-finite'):
    convert.load_npz(path)
  np.savez(path, **{'params/x': np.array([{'a': 1}], dtype=object)})
  with pytest.raises(convert.PretrainedError, match='not a readable .npz'):
    convert.load_npz(path)


def test_a_pretrained_file_must_fit_the_whole_backbone(parity, tmp_path):
  """A file that matches nothing (or only part) trained from random weights while
  the log said it loaded them: now every backbone array must be in it."""
  _, state, _ = parity
  full = convert.from_torchvision(state)
  student = StudentNet(num_classes=7)
  shapes = jax.eval_shape(
      lambda: student.init(jax.random.key(0), jnp.zeros((1, 64, 32, 3)), train=False))
  convert.check_backbone(shapes, full)  # fits
  n = (len(jax.tree.leaves(full['params'])) + len(jax.tree.leaves(full['batch_stats'])))
  without_one = convert.unflatten({k: v for k, v in convert.flatten(full).items()
                                   if k != 'params/layer4_2/conv3/kernel'})
  for pretrained, message in (
      ({}, f'{n} of the {n} backbone arrays the model needs are not in the file'),
      ({'batch_stats': full['batch_stats']}, 'params/bn1/bias, params/bn1/scale, '
       'params/conv1/kernel, ...'),
      (without_one, f'1 of the {n} backbone arrays .* \\(params/layer4_2/conv3/kernel\\)'),
      ({'state_dict': full['params']}, r"keys under \['state_dict'\] are not params/")):
    with pytest.raises(convert.PretrainedError, match=message):
      convert.check_backbone(shapes, pretrained)
  # Non-local blocks are the one part a ResNet file lacks: they keep their init.
  from i2v_jax.models import TeacherNet
  teacher = TeacherNet(num_classes=7, nonlocal_after=((), (1,), (), ()))
  shapes = jax.eval_shape(
      lambda: teacher.init(jax.random.key(0), jnp.zeros((1, 2, 64, 32, 3)), train=False))
  assert any('_nonlocal' in k for k in shapes['params']['backbone'])
  convert.check_backbone(shapes, full)


def test_negative_bn_variances_are_refused(tmp_path):
  path = str(tmp_path / 'w.npz')
  np.savez(path, **{'batch_stats/bn1/var': np.array([1.0, -0.5, 2.0], np.float32)})
  with pytest.raises(convert.PretrainedError, match='batch_stats/bn1/var has 1 negative '
                                                    'variances'):
    convert.load_npz(path)
