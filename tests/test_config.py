"""The config: the library's defaults and presets (through configs/base.py), locking,
command-line overrides."""

import json
import os
import re
import subprocess
import sys

from absl import flags
from ml_collections import config_flags
import pytest

from configs import base
from i2v_jax import config_lib, datasets, losses

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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
                   'mutual/teacher_from_student', 'tcl/reverse'}
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


def test_every_config_key_is_explained_where_it_is_defined():
  """docs/config.md is generated from i2v_jax/defaults.py; each key needs the comment
  beside its default there, or the page would have a key without a meaning."""
  import inspect
  from configs import reference
  from i2v_jax import defaults
  config_keys = set(config_lib.flatten(json.loads(base.get_config().to_json_best_effort())))
  notes = reference.meanings(inspect.getsource(defaults))
  assert {k for k in config_keys if not notes.get(k)} == set()


def test_every_preset_and_the_benchmark_configs_validate():
  from configs import synthetic_cpu
  for preset in base.PRESETS:
    for arg in (f'preset={preset}', f'preset={preset},runlocal', f'preset={preset},dataset=veri'):
      c = base.get_config(arg)
      if preset == 'vkd':  # a frozen teacher needs its checkpoint
        with pytest.raises(config_lib.ConfigError, match='teacher.mode=frozen needs'):
          config_lib.validate(c)
        c.teacher.checkpoint = '/runs/vkd_teacher'
      config_lib.validate(c)
  for entry in synthetic_cpu.sweep():
    c = synthetic_cpu.get_config(entry['arg'])
    for key, value in entry['overrides'].items():
      node = c
      *path, leaf = key.split('.')
      for part in path:
        node = node[part]
      node[leaf] = f'/runs/{value[1:]}' if str(value).startswith('@') else value
    config_lib.validate(c)
  # The one dataset table (i2v_jax.datasets) has a builder for each entry.
  from data_prep import tfds_builders
  assert set(tfds_builders.BUILDERS) == set(datasets.DATASETS) == set(base.DATASETS)


@pytest.mark.parametrize('key,value,named', [
    ('eval.checkpoint', 'bset', 'latest | best | a step number'),
    ('eval.gallery_encoder', 'techer', 'teacher | student'),
    ('loss.tcl.mine_on', 'both', 'teacher | student'),
    ('optim.schedule', 'linear', 'multistep | cosine'),
    ('mode', 'eval', 'train | evaluate | print'),
])
def test_a_bad_choice_is_named_with_its_choices(key, value, named):
  c = base.get_config()
  *path, leaf = key.split('.')
  node = c
  for p in path:
    node = node[p]
  node[leaf] = value
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(c)
  message = str(e.value)
  assert f'{key}={value!r}' in message and named in message and '\n' not in message


def test_other_rules_are_checked():
  c = base.get_config()
  c.input.student_frames = c.input.clip_len + 1
  with pytest.raises(config_lib.ConfigError, match='student_frames'):
    config_lib.validate(c)
  c = base.get_config()
  c.train.checkpoint_every = 0  # was a ZeroDivisionError after compiling
  with pytest.raises(config_lib.ConfigError, match='train.checkpoint_every=0: must be at least 1'):
    config_lib.validate(c)
  c = base.get_config()
  c.eval.protocols = ('i2v', 'v2x')
  with pytest.raises(config_lib.ConfigError, match="'v2x'"):
    config_lib.validate(c)


def test_saved_config_round_trips_and_changes_are_refused_by_key(tmp_path):
  c = base.get_config('preset=tkp,runlocal')
  with open(tmp_path / 'config.json', 'w') as f:
    f.write(c.to_json_best_effort())
  saved = config_lib.load_saved(str(tmp_path))
  assert saved.to_dict() == c.to_dict()  # tuples come back as tuples
  assert saved.model.stage_sizes == c.model.stage_sizes
  # A run saved before a key existed: the key takes the library's default.
  old = json.loads(c.to_json_best_effort())
  del old['eval']['tag']
  old['model']['width'] = 3
  (tmp_path / 'old').mkdir()
  (tmp_path / 'old' / 'config.json').write_text(json.dumps(old))
  loaded = config_lib.load_saved(str(tmp_path / 'old'))
  assert loaded.eval.tag == '' and loaded.model.width == 3 and loaded.preset == 'tkp'
  other = base.get_config('preset=mdkt,runlocal')
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.refuse_changes(other, str(tmp_path), config_lib.EVALUATE_MAY_CHANGE, 'evaluate')
  assert "preset: 'tkp' -> 'mdkt'" in str(e.value)
  assert 'loss.tcl.weight' in str(e.value)  # every differing key is named
  ok = base.get_config('preset=tkp,runlocal')
  ok.mode, ok.eval.checkpoint, ok.eval.rerank = 'evaluate', 'best', True
  assert config_lib.refuse_changes(ok, str(tmp_path), config_lib.EVALUATE_MAY_CHANGE, 'x') == [
      "eval.checkpoint: 'latest' -> 'best'", 'eval.rerank: False -> True',
      "mode: 'train' -> 'evaluate'"]
  longer = base.get_config('preset=tkp,runlocal')
  longer.train.num_steps = 40
  with pytest.raises(config_lib.ConfigError, match='train.num_steps'):
    config_lib.refuse_changes(longer, str(tmp_path), config_lib.EVALUATE_MAY_CHANGE, 'x')
  assert config_lib.refuse_changes(longer, str(tmp_path), config_lib.RESUME_MAY_CHANGE, 'x')


def test_bad_enum_and_print_on_the_command_line_answer_before_any_jax_work(tmp_path):
  # No JAX backend can start under JAX_PLATFORMS=nosuch: an answer that needed
  # one (devices, compilation) would be a backend traceback, not the config line.
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='nosuch')
  run = subprocess.run([sys.executable, '-m', 'i2v_jax.main', f'--config={CONFIG_FILE}',
                        f'--workdir={tmp_path}', '--config.eval.checkpoint=bset'],
                       env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
  assert run.returncode == 2 and run.stderr.strip().splitlines() == [
      "error: config eval.checkpoint='bset': choose latest | best | a step number"], run.stderr
  assert not os.listdir(tmp_path)  # nothing written
  run = subprocess.run([sys.executable, '-m', 'i2v_jax.main',
                        f'--config={CONFIG_FILE}:preset=vkd', '--config.mode=print'],
                       env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
  assert run.returncode == 0, run.stderr[-500:]
  assert "preset = 'vkd'" in run.stdout and 'loss.vkd.logits = 0.1' in run.stdout
  assert 'presets: mdkt | tkp | vkd' in run.stdout


@pytest.mark.parametrize('key, value, named', [
    ('train.keep_checkpoints', 0, 'train.keep_checkpoints=0: must be at least 1'),
    ('train.best_metric', 'i2v/mAp', r"did you mean 'i2v/mAP'\?"),
    ('input.height', 0, 'input.height=0: must be at least 1'),
    ('input.student_frames', 0, 'input.student_frames=0: must be at least 1'),
    ('optim.lr', -1.0, 'optim.lr=-1.0: must be greater than 0'),
    ('input.erasing_prob', 1.5, 'a probability'),
    ('teacher.mode', 'frozen', 'teacher.mode=frozen needs --config.teacher.checkpoint'),
    ('teacher.init_student', True, 'init_student=True needs --config.teacher.checkpoint'),
    ('loss.tcl.feature', 'bn_features', 'needs --config.loss.tcl.teacher_level=clip'),
    ('loss.tcl.neighbours', -1, 'loss.tcl.neighbours=-1'),
])
def test_every_value_and_cross_field_rule_is_checked_before_anything_runs(key, value, named):
  """Faults F and item 1: each is one line naming the key and the fix."""
  c = base.get_config()
  node = c
  *path, leaf = key.split('.')
  for p in path:
    node = node[p]
  node[leaf] = value
  with pytest.raises(config_lib.ConfigError, match=named) as e:
    config_lib.validate(c)
  assert '\n' not in str(e.value)


def test_shared_classifier_needs_joint_training_and_p_must_divide_over_devices():
  c = base.get_config('preset=vkd')
  c.teacher.checkpoint = '/x'
  c.model.shared_classifier = True
  with pytest.raises(config_lib.ConfigError, match='shared_classifier=True needs teacher.mode=joint'):
    config_lib.validate(c)
  with pytest.raises(config_lib.ConfigError, match='num_ids=8 is not a multiple of the 3 devices'):
    config_lib.check_devices(base.get_config(), 3)
  config_lib.check_devices(base.get_config(), 4)
  c = base.get_config()
  c.eval.rerank = True
  assert 'i2v+rerank/mAP' in config_lib.metric_names(c)
  c.train.best_metric = 'i2v+rerank/mAP'
  config_lib.validate(c)


def test_the_config_reference_page_is_current():
  """docs/config.md is generated from i2v_jax/defaults.py: regenerate it with
  `python -m configs.reference` after changing a key, a default or a comment."""
  from configs import reference
  with open(reference.PAGE, encoding='utf-8') as f:
    assert f.read() == reference.render(), 'run: python -m configs.reference'
  assert reference.meanings('  c.a.b1 = 3  # first\n'
                            '            # more\n'
                            '  c.a.b1 = 4  # a preset\n') == {'a.b1': 'first more'}


# The worked example of a new loss term in docs/extending.md: a key that the
# page asks the reader to add, so it is not in i2v_jax/defaults.py.
EXAMPLE_KEYS = {'loss.norm.student'}


def test_every_config_key_the_docs_name_exists():
  """A key written in the README or docs (`loss.tcl.reverse`, `eval.feature=...`)
  is one `i2v_jax/defaults.py` defines, so a renamed key leaves no stale page."""
  cfg = base.get_config()
  pages = [os.path.join(REPO, 'README.md')] + [
      os.path.join(root, name) for root, _, files in os.walk(os.path.join(REPO, 'docs'))
      for name in files if name.endswith('.md')]
  named, bad = 0, []
  for page in pages:
    text = open(page, encoding='utf-8').read()
    for key in re.findall(r'`([a-z_]+(?:\.[a-z_0-9]+)+)(?:=[^`]*)?`', text):
      if key.split('.')[0] not in cfg or key in EXAMPLE_KEYS:
        continue  # a module or file name (`jax.jit`, `base.py`), not a key
      named += 1
      node, found = cfg, True
      for part in key.split('.'):
        found = found and hasattr(node, 'keys') and part in node
        node = node[part] if found else None
      if not found:
        bad.append(f'{os.path.relpath(page, REPO)}: {key}')
  assert named > 50, named
  assert not bad, bad


def test_every_ablation_is_a_preset_and_the_sweeps_variant():
  """preset=<ablation> is its method with the ablation's keys changed, and the
  benchmark sweep runs exactly that (one table: i2v_jax.defaults.ABLATIONS)."""
  from configs import synthetic_cpu
  from i2v_jax import config_lib, defaults
  variants = {v['name']: v for v in synthetic_cpu.sweep()}
  for name, ablation in defaults.ABLATIONS.items():
    config = base.get_config(f'preset={name}')
    method = base.get_config(f'preset={ablation.method}')
    changed = ablation.changes(method)
    assert changed, name
    flat, flat_method = config_lib.flatten(config.to_dict()), config_lib.flatten(method.to_dict())
    assert {k for k in flat if flat[k] != flat_method[k]} == set(changed) | {'preset'}, name
    assert all(flat[k] == (list(v) if isinstance(v, tuple) else v) for k, v in changed.items())
    assert variants[name]['arg'] == f'preset={ablation.method}'
    assert all(variants[name]['overrides'][k] == v for k, v in changed.items())
    assert config_lib.describe_overrides(config) == 'none'
  # Neighbourhood TCL's k follows the batch: K x M - 1.
  assert base.get_config('preset=mdkt_tcl_nbr').loss.tcl.neighbours == 4 * 4 - 1
  # The TCL weight alone at 0 leaves reverse TCL on: said, not silent.
  c = base.get_config('preset=mdkt')
  c.loss.tcl.weight = 0.0
  assert config_lib.warnings(c) and 'reverse TCL is still on' in config_lib.warnings(c)[0]
  assert not config_lib.warnings(base.get_config('preset=mdkt_no_tcl'))
  assert config_lib.describe_overrides(c) == 'loss.tcl.weight=0.0'
