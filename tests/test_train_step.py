"""The sharded step: 8 fake devices against 1 device, and a few optimizer steps."""

import os

import jax
import numpy as np
import pytest

from configs import base
from i2v_jax import networks, train_step
from tests.conftest import REPO

NUM_CLASSES = 16


def tiny_config(mining='global', bn='global', preset='mdkt'):
  c = base.get_config(f'preset={preset},runlocal')
  c.model.width = 4
  c.input.height, c.input.width = 32, 16
  c.input.num_ids, c.input.tracklets_per_id = 16, 2
  c.input.clip_len = c.input.student_frames = 2
  c.parallel.mining_scope, c.parallel.bn_scope = mining, bn
  # Every term on, so every loss is covered by the equivalence.
  c.loss.triplet.student_to_teacher = c.loss.triplet.teacher_to_student = 0.5
  c.loss.tkp.feature = c.loss.tkp.distance = 0.1
  c.loss.vkd.logits, c.loss.vkd.distance = 0.1, 1e-3
  return c


def global_batch(c, seed=0):
  rng = np.random.default_rng(seed)
  b = c.input.num_ids * c.input.tracklets_per_id
  clips = rng.standard_normal((b, c.input.clip_len, c.input.height, c.input.width, 3))
  labels = np.repeat(rng.permutation(NUM_CLASSES)[:c.input.num_ids], c.input.tracklets_per_id)
  return {'clips': clips.astype(np.float32), 'labels': labels.astype(np.int32)}


def run(c, mesh, state, batch, fn=None):
  fn = fn or train_step.make_loss_and_grads(c, mesh)
  return fn(train_step.replicate(state, mesh), train_step.shard_batch(batch, mesh))


def assert_trees_close(a, b, rtol):
  """Per leaf: ||a - b|| <= rtol * ||b|| + 1e-6 * ||whole tree b||.

  The absolute floor matters for leaves whose exact value is 0 — e.g. the bias
  gradient of a BatchNorm feeding another training-mode BatchNorm (the shift is
  normalised away): there both sides are float noise of ~1e-7.
  """
  floor = 1e-6 * float(np.sqrt(sum(np.sum(np.square(y)) for y in jax.tree.leaves(b))))
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    x, y = np.asarray(x), np.asarray(y)
    err = np.linalg.norm(x - y)
    assert err <= rtol * np.linalg.norm(y) + floor, (
        jax.tree_util.keystr(path), err, np.linalg.norm(y))


@pytest.fixture(scope='module')
def state_global():
  c = tiny_config()
  return c, train_step.create_train_state(c, NUM_CLASSES, jax.random.key(0))


def test_global_global_8_devices_equal_1_device(state_global):
  c, state = state_global
  batch = global_batch(c)
  assert len(jax.devices()) == 8
  loss8, metrics8, grads8, stats8 = run(c, train_step.make_mesh(), state, batch)
  loss1, metrics1, grads1, stats1 = run(c, train_step.make_mesh(jax.devices()[:1]), state, batch)
  np.testing.assert_allclose(loss8, loss1, rtol=1e-5)
  # A temperature-scaled KL is τ²·Σ p (log p − log q): its float32 rounding floor is
  # ~τ²·1e-7 absolute (vkd/logits: τ = 10), whatever the size of the KL itself.
  tau2 = {'loss/vkd/logits': c.loss.vkd.temperature ** 2}
  for k in metrics1:
    if k.startswith('loss/'):
      np.testing.assert_allclose(metrics8[k], metrics1[k], rtol=1e-5,
                                 atol=1e-7 * tau2.get(k, 1.0), err_msg=k)
  assert_trees_close(grads8, grads1, rtol=1e-5)
  assert_trees_close(stats8, stats1, rtol=1e-5)
  assert float(loss1) > 0 and all(np.abs(g).max() > 0 for g in jax.tree.leaves(grads1['student']))


def test_local_local_equals_per_device_groups():
  c = tiny_config('local', 'local')
  state = train_step.create_train_state(c, NUM_CLASSES, jax.random.key(1))
  batch = global_batch(c, seed=1)
  loss8, _, grads8, stats8 = run(c, train_step.make_mesh(), state, batch)
  one = train_step.make_mesh(jax.devices()[:1])
  group = len(batch['labels']) // 8
  fn = train_step.make_loss_and_grads(c, one)  # compiled once for all groups
  results = [run(c, one, state,
                 jax.tree.map(lambda x, i=i: x[i * group:(i + 1) * group], batch), fn)
             for i in range(8)]
  mean = lambda trees: jax.tree.map(lambda *xs: np.mean(np.stack(xs), 0), *trees)
  np.testing.assert_allclose(loss8, np.mean([r[0] for r in results]), rtol=1e-5)
  assert_trees_close(grads8, mean([r[2] for r in results]), rtol=1e-5)
  assert_trees_close(stats8, mean([r[3] for r in results]), rtol=1e-5)


def test_train_step_lowers_the_loss_and_counts_steps():
  c = tiny_config()
  c.optim.lr = 1e-3
  mesh = train_step.make_mesh()
  state = train_step.replicate(train_step.create_train_state(c, NUM_CLASSES, jax.random.key(2)), mesh)
  step = train_step.make_train_step(c, mesh)
  batch = train_step.shard_batch(global_batch(c, seed=2), mesh)
  losses = []
  for _ in range(5):
    state, metrics = step(state, batch)
    losses.append(float(metrics['loss/total']))
  assert int(state.step) == 5
  assert losses[-1] < losses[0], losses
  assert {'lr', 'grad_norm', 'param_norm', 'loss/tcl'} <= set(metrics)


def test_frozen_teacher_gets_no_gradient_or_optimizer_state():
  c = tiny_config(preset='vkd')
  teacher_vars = train_step.init_variables(c, NUM_CLASSES, jax.random.key(3))['teacher']
  with pytest.raises(ValueError, match='teacher.checkpoint'):
    train_step.create_train_state(c, NUM_CLASSES, jax.random.key(3))
  c.teacher.checkpoint = 'a_teacher_only_run'  # where load_teacher read teacher_vars
  expected = jax.tree.map(np.array, teacher_vars)  # host copy: the step donates its input
  c.teacher.reinit_student_layer4 = False
  state = train_step.create_train_state(c, NUM_CLASSES, jax.random.key(3), teacher_variables=teacher_vars)
  # VKD: the student starts as a copy of the teacher (teacher.init_student, on in the preset).
  assert c.teacher.init_student
  assert_trees_close(state.params['student'], expected['params'], rtol=0)
  assert_trees_close(state.batch_stats['student'], expected['batch_stats'], rtol=0)
  c.teacher.init_student = False
  fresh = train_step.create_train_state(c, NUM_CLASSES, jax.random.key(3), teacher_variables=teacher_vars)
  assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(fresh.params['student']),
                                                  jax.tree.leaves(expected['params'])))
  c.teacher.init_student = True
  # A teacher trained with non-local blocks does not silently load into a plain one.
  c_nl = tiny_config(preset='teacher_only')
  nl_vars = train_step.init_variables(c_nl, NUM_CLASSES, jax.random.key(4))['teacher']
  with pytest.raises(ValueError, match=r'extra leaves.*nonlocal.*nonlocal_blocks.enabled=False'):
    train_step.create_train_state(c, NUM_CLASSES, jax.random.key(3), teacher_variables=nl_vars)
  assert set(state.params) == {'student'} and set(state.frozen) == {'teacher'}
  mesh = train_step.make_mesh()
  step = train_step.make_train_step(c, mesh)
  new, metrics = step(train_step.replicate(state, mesh), train_step.shard_batch(global_batch(c), mesh))
  assert 'loss/vkd/logits' in metrics and np.isfinite(metrics['loss/total'])
  assert_trees_close(new.frozen, {'teacher': expected}, rtol=0)


def test_vkd_student_reinit_resets_layer4_and_head_only():
  """VKD's reinit_layers(reinit_l4=True): a copy of the teacher whose last stage
  and head are the fresh (model.pretrained or random) initialisation."""
  c = tiny_config(preset='vkd')
  c.teacher.checkpoint = 'a_teacher_only_run'
  assert c.teacher.reinit_student_layer4
  teacher_vars = jax.tree.map(np.array, train_step.init_variables(c, NUM_CLASSES,
                                                             jax.random.key(5))['teacher'])
  fresh = jax.tree.map(np.array, train_step.init_variables(c, NUM_CLASSES,
                                                      jax.random.key(6))['student'])
  state = train_step.create_train_state(c, NUM_CLASSES, jax.random.key(6),
                                   teacher_variables=teacher_vars)
  got = {'params': state.params['student'], 'batch_stats': state.batch_stats['student']}
  for collection in ('params', 'batch_stats'):
    for name, sub in got[collection]['backbone'].items():
      source = fresh if name.startswith('layer4_') else teacher_vars
      assert_trees_close(sub, source[collection]['backbone'][name], rtol=0)
    assert_trees_close(got[collection]['head'], fresh[collection]['head'], rtol=0)
  assert any(k.startswith('layer4_') for k in got['params']['backbone'])


def test_frozen_teacher_bn_mode():
  """bn_mode=batch (VKD's teacher_mode): the frozen teacher's outputs do not depend
  on its running statistics; bn_mode=running: they do. Neither changes them."""
  c = tiny_config(preset='vkd', mining='local', bn='local')
  c.teacher.checkpoint = 'a_teacher_only_run'
  mesh = train_step.make_mesh(jax.devices()[:1])
  teacher_vars = train_step.init_variables(c, NUM_CLASSES, jax.random.key(7))['teacher']
  odd = dict(teacher_vars, batch_stats=jax.tree.map(lambda x: x + 3.0,
                                                    teacher_vars['batch_stats']))
  batch = global_batch(c)
  out = {}
  for mode in ('batch', 'running'):
    c.teacher.bn_mode = mode
    for name, tv in (('normal', teacher_vars), ('odd', odd)):
      state = train_step.create_train_state(c, NUM_CLASSES, jax.random.key(7), teacher_variables=tv)
      _, metrics, _, _ = run(c, mesh, state, batch)
      out[mode, name] = float(metrics['loss/vkd/logits'])
  assert out['batch', 'normal'] == pytest.approx(out['batch', 'odd'], rel=1e-6)
  # (the loss is small: classifiers start at N(0, 0.001²); compare relatively)
  assert abs(out['running', 'normal'] - out['running', 'odd']) > 0.1 * out['running', 'normal']
  c.teacher.bn_mode = 'bacth'
  with pytest.raises(ValueError, match="teacher.bn_mode='bacth'"):
    train_step.create_train_state(c, NUM_CLASSES, jax.random.key(7), teacher_variables=teacher_vars)


def test_joint_mode_starts_from_the_teacher_stage_and_trains_it():
  c = tiny_config(preset='mdkt')
  c.teacher.checkpoint = 'a_teacher_only_run'
  teacher_vars = jax.tree.map(np.array, train_step.init_variables(c, NUM_CLASSES,
                                                             jax.random.key(8))['teacher'])
  state = train_step.create_train_state(c, NUM_CLASSES, jax.random.key(9), teacher_variables=teacher_vars)
  assert set(state.params) == {'teacher', 'student'} and not state.frozen
  assert_trees_close(state.params['teacher'], teacher_vars['params'], rtol=0)
  assert_trees_close(state.batch_stats['teacher'], teacher_vars['batch_stats'], rtol=0)
  mesh = train_step.make_mesh()
  new, _ = train_step.make_train_step(c, mesh)(
      train_step.replicate(state, mesh), train_step.shard_batch(global_batch(c), mesh))
  moved = [np.abs(np.asarray(a) - b).max() for a, b in
           zip(jax.tree.leaves(new.params['teacher']), jax.tree.leaves(teacher_vars['params']))]
  assert max(moved) > 0  # the teacher keeps training


def test_shared_classifier_is_one_kernel_for_both_networks():
  c = tiny_config(preset='mdkt', mining='local', bn='local')
  mesh = train_step.make_mesh(jax.devices()[:1])
  state = train_step.create_train_state(c, NUM_CLASSES, jax.random.key(10))
  batch = global_batch(c)
  _, m_own, g_own, _ = run(c, mesh, state, batch)
  c.model.shared_classifier = True
  _, m_shared, g_shared, _ = run(c, mesh, state, batch)
  # The student's logits now come from the teacher's kernel; its own gets no gradient,
  # the teacher's collects both networks' ID gradients.
  assert float(m_shared['loss/id/student']) != pytest.approx(float(m_own['loss/id/student']))
  assert np.all(np.asarray(g_shared['student']['head']['classifier']['kernel']) == 0)
  shared_t = np.asarray(g_shared['teacher']['head']['classifier']['kernel'])
  own_t = np.asarray(g_own['teacher']['head']['classifier']['kernel'])
  assert np.abs(shared_t - own_t).max() > 1e-6
  c.teacher.mode = 'frozen'
  with pytest.raises(ValueError, match='shared_classifier'):
    train_step.create_train_state(c, NUM_CLASSES, jax.random.key(10))


def test_learning_rate_schedules():
  c = base.get_config()
  c.train.num_steps = 150
  c.optim.lr, c.optim.decay_at = 1.0, (0.4, 0.8)
  lr = train_step.learning_rate(c)
  assert [float(lr(s)) for s in (0, 59, 60, 119, 120)] == pytest.approx(
      [1.0, 1.0, 0.1, 0.1, 0.01])
  c.optim.warmup_steps, c.optim.schedule = 10, 'cosine'
  lr = train_step.learning_rate(c)
  assert float(lr(0)) == pytest.approx(0.1) and float(lr(10)) == pytest.approx(1.0)
  assert float(lr(150)) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize('preset', sorted(base.PRESETS))
def test_every_preset_in_the_table_takes_a_step(preset):
  """Each entry of the methods table, at tiny size on the 8 test devices: its
  state holds exactly its trained networks, one step logs exactly its active loss
  terms, all finite, and changes every trained parameter leaf's tree."""
  from i2v_jax.losses.objective import active_terms
  c = base.get_config(f'preset={preset},runlocal')
  c.model.width = 4
  c.input.height, c.input.width = 32, 16
  c.input.num_ids, c.input.tracklets_per_id = 8, 2
  c.input.clip_len = c.input.student_frames = 2
  teacher = None
  if c.teacher.mode == 'frozen':  # vkd: a teacher_only run's variables (here fresh ones)
    c.teacher.checkpoint = 'a_teacher_only_run'
    teacher = train_step.init_variables(c, NUM_CLASSES, jax.random.key(9))['teacher']
  state = train_step.create_train_state(c, NUM_CLASSES, jax.random.key(0), teacher)
  trained = train_step.trained_networks(c)
  outside = {n for n, net in networks.table(c).items() if net.role != 'trained'}
  assert set(state.params) == set(trained) and set(state.frozen) == outside
  assert outside == ({'teacher'} if c.teacher.mode == 'frozen' else set()) | (
      {'student_ema'} if 'student_ema' in c.networks else set())
  before = jax.tree.map(np.array, state.params)
  mesh = train_step.make_mesh()
  step = train_step.make_train_step(c, mesh)
  new, metrics = step(train_step.replicate(state, mesh),
                      train_step.shard_batch(global_batch(c), mesh))
  logged = {k[len('loss/'):] for k in metrics if k.startswith('loss/') and k != 'loss/total'}
  assert logged == set(active_terms(c.loss, c.networks)), preset
  assert all(np.isfinite(float(v)) for v in metrics.values())
  for name in trained:
    assert not all(np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(new.params[name]), jax.tree.leaves(before[name]))), name


@pytest.mark.parametrize('preset', ['mdkt', 'mean_teacher', 'student_only'])
def test_a_fitting_pretrained_backbone_passes_the_check(preset):
  """The benchmark's committed backbone fits every network of the benchmark's
  model (an EMA network is a copy, not checked), from abstract shapes."""
  from configs import synthetic_cpu
  from i2v_jax.models import convert
  pretrained = convert.load_npz(os.path.join(REPO, 'bench', 'ablation', 'pretrained_backbone.npz'))
  train_step.check_pretrained(synthetic_cpu.get_config(f'preset={preset}'), 10, pretrained)
