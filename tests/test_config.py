"""configs/base.py: presets, locking, command-line overrides."""

import os
import sys

from absl import flags
from ml_collections import config_flags
import pytest

from configs import base
from i2v_jax import losses

CONFIG_FILE = os.path.join(os.path.dirname(__file__), '..', 'configs', 'base.py')


def parse(argv, monkeypatch):
  # config_flags reads the --config.* overrides from sys.argv.
  monkeypatch.setattr(sys, 'argv', ['prog'] + argv)
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, flag_values=values)
  values(sys.argv)
  return values.config


def active(preset):
  cfg = base.get_config(f'preset={preset}')
  return set(losses.active_terms(cfg.loss, cfg.networks)), cfg


def test_presets_select_their_losses():
  terms, cfg = active('mdkt')
  assert terms == {'id/teacher', 'id/student', 'triplet/teacher', 'triplet/student',
                   'tcl', 'mutual/student_from_teacher',
                   'mutual/teacher_from_student', 'mutual/reverse_tcl'}
  assert cfg.teacher.mode == 'joint' and cfg.model.nonlocal_blocks.enabled
  terms, cfg = active('tkp')
  assert terms == {'id/teacher', 'id/student', 'triplet/teacher', 'triplet/student',
                   'triplet/student_to_teacher', 'triplet/teacher_to_student',
                   'tkp/feature', 'tkp/distance'}
  terms, cfg = active('vkd')
  assert terms == {'id/student', 'triplet/student', 'vkd/logits', 'vkd/distance'}
  assert cfg.teacher.mode == 'frozen' and cfg.input.student_frames == 2
  assert not cfg.model.nonlocal_blocks.enabled
  assert cfg.loss.vkd.temperature == 10.0 and cfg.loss.vkd.logits == 0.1
  # VKD's train_distill.py, item by item (issue 10).
  assert cfg.loss.student_level == 'set' and cfg.loss.triplet.soft_margin
  assert cfg.teacher.bn_mode == 'batch' and cfg.teacher.init_student
  assert cfg.teacher.reinit_student_layer4
  assert cfg.input.sampling == 'multiview' and cfg.input.shuffle_frames
  assert cfg.input.clip_len == 8
  assert (cfg.optim.lr, cfg.optim.weight_decay) == (1e-4, 1e-5)
  assert tuple(cfg.optim.decay_at) == (300 / 400, 350 / 400)
  terms, cfg = active('vkd_teacher')  # VKD's train_v2v.py
  assert terms == {'id/teacher', 'triplet/teacher'} and cfg.networks == ('teacher',)
  assert cfg.loss.triplet.soft_margin and not cfg.model.nonlocal_blocks.enabled
  assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.input.clip_len) == (1e-4, 1e-5, 8)
  terms, cfg = active('teacher_only')
  assert terms == {'id/teacher', 'triplet/teacher'} and cfg.networks == ('teacher',)
  terms, cfg = active('student_only')
  assert terms == {'id/student', 'triplet/student'} and cfg.networks == ('student',)
  assert cfg.eval.gallery_encoder == 'student'


def test_runlocal_shrinks_and_dataset_sets_input():
  cfg = base.get_config('preset=tkp,runlocal')
  assert cfg.model.width == 8 and cfg.train.num_steps == 20
  assert base.get_config('dataset=veri').input.height == 224


def test_command_line_overrides_and_typos(monkeypatch):
  cfg = parse([f'--config={CONFIG_FILE}:preset=tkp,runlocal',
               '--config.loss.tcl.temperature=0.05',
               '--config.parallel.mining_scope=local'], monkeypatch)
  assert cfg.preset == 'tkp' and cfg.loss.tcl.temperature == 0.05
  assert cfg.parallel.mining_scope == 'local'
  with pytest.raises(Exception, match='tcl_weigth'):
    parse([f'--config={CONFIG_FILE}', '--config.loss.tcl_weigth=1'], monkeypatch)
  cfg = base.get_config()
  with pytest.raises(AttributeError, match='tcl_weigth'):
    cfg.loss.tcl_weigth = 1.0


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match="unknown config argument 'prest'"):
    base.get_config('prest=tkp')
  with pytest.raises(ValueError, match="preset='kd'"):
    base.get_config('preset=kd')
  with pytest.raises(ValueError, match='runlocal=.*true or false'):
    base.get_config('runlocal=maybe')
