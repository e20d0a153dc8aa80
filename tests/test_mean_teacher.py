"""The mean-teacher preset: a third network (an EMA of the student) from one
networks-table entry. The EMA update against its equation, no gradient through
the EMA, its loss terms against their definitions, and resume bit-exactness."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from i2v_jax import checkpoint, networks, train_step, trainer
from i2v_jax.losses.objective import objective
from tests.test_losses import ref_kl, ref_softmax, ref_tcl
from tests.test_train_step import NUM_CLASSES, global_batch


def tiny(preset='mean_teacher'):
  c = base.get_config(f'preset={preset},runlocal')
  c.model.width = 4
  c.input.height, c.input.width = 32, 16
  c.input.num_ids, c.input.tracklets_per_id = 8, 2
  c.input.clip_len = c.input.student_frames = 2
  return c


def test_the_preset_is_mdkt_plus_one_table_entry():
  c, mdkt = tiny(), tiny('mdkt')
  table = networks.table(c)
  assert tuple(table) == ('teacher', 'student', 'student_ema')
  ema = table['student_ema']
  assert (ema.role, ema.ema_of, ema.ema_decay, ema.view) == ('ema', 'student', 0.99, 'images')
  assert not ema.retrieval and train_step.trained_networks(c) == ('teacher', 'student')
  # What evaluation retrieves with is mdkt's.
  from i2v_jax.evaluation import encoders
  assert encoders(c) == encoders(mdkt)


def test_ema_update_by_hand():
  """e <- d e + (1 - d) theta, params and running averages alike: d = 0.9,
  e = 1, theta = 3 gives 1.2; running mean 0 -> 2 gives 0.2."""
  nets = (networks.Network('student', 'image', 'images'),
          networks.Network('student_ema', 'image', 'images', role='ema', bn_mode='running',
                           ema_of='student', ema_decay=0.9))
  state = train_step.TrainState(
      step=jnp.zeros((), jnp.int32), params={}, batch_stats={}, opt_state=(),
      frozen={'student_ema': {'params': {'w': jnp.float32(1.0)},
                              'batch_stats': {'mean': jnp.float32(0.0)}}},
      networks=nets)
  new = train_step.ema_update(state, {'student': {'w': jnp.float32(3.0)}},
                              {'student': {'mean': jnp.float32(2.0)}})
  assert float(new['student_ema']['params']['w']) == pytest.approx(1.2)
  assert float(new['student_ema']['batch_stats']['mean']) == pytest.approx(0.2)


def test_two_steps_follow_the_decay_equation():
  """The state's EMA starts as the student and after each step equals
  d·(the EMA before) + (1 − d)·(the student after the step), in numpy."""
  c = tiny()
  c.unlock()
  c.ema.decay = 0.7
  state = train_step.create_train_state(c, NUM_CLASSES, jax.random.key(0))
  start = jax.device_get(state.frozen['student_ema'])
  student = {'params': state.params['student'], 'batch_stats': state.batch_stats['student']}
  for a, b in zip(jax.tree.leaves(start), jax.tree.leaves(jax.device_get(student))):
    np.testing.assert_array_equal(a, b)
  mesh = train_step.make_mesh()
  step = train_step.make_train_step(c, mesh)
  state = train_step.replicate(state, mesh)
  ema = start
  for s in range(2):
    state, _ = step(state, train_step.shard_batch(global_batch(c, seed=s), mesh))
    now = jax.device_get({'params': state.params['student'],
                          'batch_stats': state.batch_stats['student']})
    want = jax.tree.map(lambda e, x: 0.7 * np.asarray(e) + 0.3 * np.asarray(x), ema, now)
    got = jax.device_get(state.frozen['student_ema'])
    for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
      np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7)
    ema = got
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(ema),
                                                      jax.tree.leaves(start)))


def test_no_gradient_reaches_the_ema():
  """d loss / d (EMA variables) is exactly zero; the student's is not; the
  optimizer holds no state for the EMA."""
  c = tiny()
  state = train_step.create_train_state(c, NUM_CLASSES, jax.random.key(0))
  batch = global_batch(c)
  views = networks.views(jnp.asarray(batch['clips']), c.input.student_frames)

  def loss(frozen, params):
    outputs, _ = train_step.forward(state.replace(frozen=frozen), params, views)
    return objective(outputs, jnp.asarray(batch['labels']), c.loss)[0]

  g_ema, g_params = jax.grad(loss, argnums=(0, 1))(state.frozen, state.params)
  assert all(not np.any(np.asarray(g)) for g in jax.tree.leaves(g_ema))
  assert any(np.any(np.asarray(g)) for g in jax.tree.leaves(g_params['student']))
  assert 'student_ema' not in state.params and 'student_ema' not in str(
      jax.tree_util.tree_structure(state.opt_state))


def test_mean_teacher_terms_from_their_definitions():
  """mean_teacher/logits = tau^2 mean KL(softmax(z_EMA/tau) || softmax(z_S/tau));
  mean_teacher/tcl = TCL with the EMA's rows as the teacher (loops in the test)."""
  rng = np.random.default_rng(3)
  b, m, d, k = 4, 2, 5, 3
  labels = np.array([0, 0, 1, 1])
  out = lambda: {'features': jnp.asarray(rng.standard_normal((b * m, d)), jnp.float32),
                 'logits': jnp.asarray(rng.standard_normal((b * m, k)), jnp.float32)}
  student, ema = out(), out()
  cfg = tiny('student_only').loss  # no teacher term
  cfg.unlock()
  for term in ('id', 'triplet'):
    cfg[term].student = 0.0
  cfg.mean_teacher.logits = cfg.mean_teacher.tcl = 1.0
  cfg.mean_teacher.temperature = 2.0
  _, metrics = objective({'student': student, 'student_ema': ema}, jnp.asarray(labels), cfg)
  assert {k for k in metrics if k.startswith('loss/')} == {
      'loss/mean_teacher/logits', 'loss/mean_teacher/tcl'}
  tau = 2.0
  want = np.mean([ref_kl(ref_softmax(list(np.asarray(ema['logits'][i]) / tau)),
                         ref_softmax(list(np.asarray(student['logits'][i]) / tau)))
                  for i in range(b * m)]) * tau ** 2
  np.testing.assert_allclose(metrics['loss/mean_teacher/logits'], want, rtol=1e-5)
  tcl = cfg.tcl
  want = ref_tcl(np.asarray(student['features']).tolist(), np.asarray(ema['features']).tolist(),
                 np.repeat(labels, m).tolist(), tcl.temperature, tcl.num_negatives,
                 tcl.mine_on, tcl.distance, 'teacher_to_student')
  np.testing.assert_allclose(metrics['loss/mean_teacher/tcl'], want, rtol=1e-4)


def test_a_weighted_term_without_the_ema_network_is_one_line():
  from i2v_jax import config_lib
  c = tiny('mdkt')
  c.loss.mean_teacher.logits = 1.0
  with pytest.raises(config_lib.ConfigError, match='student_ema'):
    config_lib.validate(c)
  c = tiny('student_only')
  c.networks = ('student_ema',)
  with pytest.raises(config_lib.ConfigError, match="averages 'student'"):
    config_lib.validate(c)


def test_the_ema_is_saved_and_resumed_bit_exactly(tmp_path, cli_data_dir):
  """4 steps straight, and the same run resumed from its step 2 checkpoint (as
after a crash): the same EMA at step 4, bit for bit."""
  from tests.test_trainer import tiny_config
  c = tiny_config(cli_data_dir, steps=4)
  c.unlock()
  c.preset, c.networks = 'mean_teacher', ('teacher', 'student', 'student_ema')
  c.loss.mean_teacher.logits = c.loss.mean_teacher.tcl = 1.0
  c.train.eval_every, c.train.checkpoint_every = 0, 2
  straight, resumed = str(tmp_path / 'straight'), str(tmp_path / 'resumed')
  trainer.train_and_log(c, straight)
  shutil.copytree(straight, resumed)
  shutil.rmtree(os.path.join(resumed, 'checkpoints', '4'))
  trainer.train_and_log(c, resumed)  # restores step 2 (its EMA too), trains 3 and 4
  assert os.path.isdir(os.path.join(resumed, 'checkpoints', '4'))
  for name in ('student_ema', 'student', 'teacher'):
    a = checkpoint.load_network(straight, name, 4)
    b = checkpoint.load_network(resumed, name, 4)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=name)
