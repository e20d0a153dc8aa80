"""Helpers for config files: typed ``get_config`` arguments (big_vision style),
validation before anything runs, and the workdir's saved config.

``--config=configs/base.py:preset=tkp,runlocal`` calls ``get_config('preset=tkp,runlocal')``;
`parse_arg` turns that into a ConfigDict typed by the defaults the config file
declares, so ``runlocal`` alone means True and ``seed=3`` is an int.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
from typing import Any, Dict, List, Optional, Sequence

import ml_collections

from i2v_jax import defaults as library_defaults
from i2v_jax import command_line, datasets, eval_tables
from i2v_jax.errors import UserError
from i2v_jax.run_folder import RunFolder, tag_problem


def _convert(name: str, text: str, default: Any) -> Any:
  if isinstance(default, bool):
    if text.lower() in ('', 'true', '1', 'yes'):
      return True
    if text.lower() in ('false', '0', 'no'):
      return False
    raise ValueError(f'config argument {name}={text!r}: expected true or false')
  if isinstance(default, int):
    return int(text)
  if isinstance(default, float):
    return float(text)
  return text


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parses ``'a=1,b,c=x'`` against ``defaults``; unknown names are an error."""
  values = dict(defaults)
  for item in filter(None, (arg or '').split(',')):
    name, _, text = item.partition('=')
    name = name.strip()
    if name not in defaults:
      raise ValueError(
          f'unknown config argument {name!r} in {arg!r}; known: '
          f'{", ".join(sorted(defaults))}')
    values[name] = _convert(name, text.strip(), defaults[name])
  return ml_collections.ConfigDict(values)


class ConfigError(UserError, ValueError):
  """A config that cannot run: the message names the key, the value and the fix."""


MODES = ('train', 'evaluate', 'print')  # what the command does (config mode)


def choices() -> dict:
  """Every switch that takes one of a few values -> its choices, read from the
  module that owns it (each declares ``CONFIG_CHOICES``), so a choice added to an
  owner is accepted here with no second list. The owners import JAX (not a
  backend: validation still answers before any device or compilation)."""
  from i2v_jax.distances import CONFIG_CHOICES as distances
  from i2v_jax.evaluation.features import CONFIG_CHOICES as features
  from i2v_jax.input_pipeline import CONFIG_CHOICES as input_pipeline
  from i2v_jax.losses.objective import CONFIG_CHOICES as objective
  from i2v_jax.losses.tcl import CONFIG_CHOICES as tcl
  from i2v_jax.models.reid import CONFIG_CHOICES as reid
  from i2v_jax.train_step import CONFIG_CHOICES as train_step
  out = {'mode': MODES}
  for owned in (datasets.CONFIG_CHOICES, input_pipeline, reid, objective, distances, tcl,
                train_step, features, eval_tables.CONFIG_CHOICES):
    out.update(owned)
  return out


# Keys that moved: old -> new. A command line naming the old key is refused with
# the new name; a saved config.json with the old key is read under the new one.
RENAMED = {'loss.mutual.reverse_tcl': 'loss.tcl.reverse'}
PROTOCOLS = tuple(eval_tables.PROTOCOLS)

# What may differ from the workdir's config.json. Evaluate mode: evaluation
# settings and the dataset (a run evaluates on another one, cross-domain; the
# dataset folder must hold the data.name it is given). Resume: where the dataset
# now lives (the same build: the run's dataset.json says which), also how long to train (the
# schedule's milestones are fractions of num_steps, so they move with it) and how
# often to log, evaluate and save.
EVALUATE_MAY_CHANGE = ('mode', 'eval.', 'data.')
RESUME_MAY_CHANGE = (
    'mode', 'eval.', 'data.dir', 'train.num_steps', 'train.log_every', 'train.eval_every', 'train.checkpoint_every',
    'train.keep_checkpoints')


def get(config, key: str) -> Any:
  node = config
  for part in key.split('.'):
    node = node[part]
  return node


def validate(config) -> None:
  """Raises ConfigError naming the key, the value and the choices (one line)."""
  _check_schema(config)
  for key, allowed in choices().items():
    value = get(config, key)
    if value not in allowed:
      raise ConfigError(f'config {key}={value!r}: choose one of {" | ".join(allowed)}')
  checkpoint = str(config.eval.checkpoint)
  if checkpoint not in ('latest', 'best') and not checkpoint.isdigit():
    raise ConfigError(f'config eval.checkpoint={checkpoint!r}: choose latest | best | '
                     'a step number')
  from i2v_jax import networks  # the networks table
  try:
    networks.table(config)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  unknown = set(config.eval.protocols) - set(PROTOCOLS)
  if unknown:
    raise ConfigError(f'config eval.protocols={tuple(config.eval.protocols)!r}: '
                     f'{sorted(unknown)} unknown; choose from {PROTOCOLS}')
  for key in ('train.num_steps', 'train.log_every', 'train.checkpoint_every',
              'input.num_ids', 'input.tracklets_per_id', 'input.clip_len'):
    if get(config, key) < 1:
      raise ConfigError(f'config {key}={get(config, key)!r}: must be at least 1')
  tcl = config.loss.tcl
  if tcl.neighbours < 0 or tcl.teacher_temperature < 0 or tcl.temperature <= 0:
    raise ConfigError(f'config loss.tcl.neighbours={tcl.neighbours}, temperature='
                      f'{tcl.temperature}, teacher_temperature={tcl.teacher_temperature}: '
                      'temperature must be > 0, the others >= 0 (0 = off)')
  if tcl.feature == 'bn_features' and tcl.teacher_level != 'clip':
    raise ConfigError("config loss.tcl.feature='bn_features' needs "
                      "--config.loss.tcl.teacher_level=clip (the teacher's BN-neck "
                      'normalises clip features, not frames)')
  if config.input.student_frames > config.input.clip_len:
    raise ConfigError(f'config input.student_frames={config.input.student_frames} > '
                     f'input.clip_len={config.input.clip_len}: M images come from the '
                     'T frames of a clip; lower student_frames or raise clip_len')
  for key in ('input.height', 'input.width', 'input.student_frames', 'train.keep_checkpoints',
              'eval.batch_size', 'eval.clip_len', 'eval.max_rank', 'eval.query_block',
              'eval.visualize_top'):
    if get(config, key) < 1:
      raise ConfigError(f'config {key}={get(config, key)!r}: must be at least 1')
  for key in ('optim.lr', 'loss.mutual.temperature', 'loss.vkd.temperature'):
    if not get(config, key) > 0:
      raise ConfigError(f'config {key}={get(config, key)!r}: must be greater than 0')
  for key in ('optim.weight_decay', 'optim.grad_clip', 'optim.warmup_steps', 'train.eval_every',
              'input.pad_crop', 'eval.max_frames', 'loss.id.label_smoothing', 'seed'):
    if get(config, key) < 0:
      raise ConfigError(f'config {key}={get(config, key)!r}: must be 0 or more')
  if not 0 <= config.input.erasing_prob <= 1:
    raise ConfigError(f'config input.erasing_prob={config.input.erasing_prob!r}: a probability '
                      'in [0, 1]')
  _check_ranges(config)
  if config.train.eval_every and config.train.best_metric not in metric_names(config):
    raise ConfigError(f'config train.best_metric={config.train.best_metric!r}: not an '
                      f'evaluation metric of this config; did you mean '
                      f'{nearest(config.train.best_metric, metric_names(config))!r}?')
  if config.mode == 'print':
    return  # printing a preset needs none of what running it needs
  if config.teacher.mode == 'frozen' and 'teacher' in config.networks and \
      not config.teacher.checkpoint:
    raise ConfigError('config teacher.mode=frozen needs --config.teacher.checkpoint=<workdir '
                      'of a finished teacher_only or vkd_teacher run>')
  if config.teacher.init_student and not config.teacher.checkpoint:
    raise ConfigError('config teacher.init_student=True needs --config.teacher.checkpoint='
                      '<workdir of a finished teacher run> (the student starts as its copy)')
  if config.model.shared_classifier and config.teacher.mode != 'joint':
    raise ConfigError('config model.shared_classifier=True needs teacher.mode=joint (one '
                      'classifier trained by both networks)')


def _check_schema(config) -> None:
  """The config has exactly the library's keys (`i2v_jax.defaults`): a config
  file that builds its own dict, or adds a key the code never reads, is refused."""
  want = flatten(library_defaults.get_config().to_dict())
  have = flatten(config.to_dict())
  missing, unknown = sorted(set(want) - set(have)), sorted(set(have) - set(want))
  if missing or unknown:
    raise ConfigError(
        'the config ' + '; '.join(filter(None, (
            missing and f'lacks {len(missing)} keys ({", ".join(missing[:3])}...)',
            unknown and f'has keys the code does not read ({", ".join(unknown[:3])})')))
        + ': start the config file from configs/base.py\'s get_config() (or '
        'i2v_jax.defaults.get_config()) and change only what differs')


def _check_ranges(config) -> None:
  """The rules the model, the losses, re-ranking and the run folder enforce where
  they run (inside a traced loss, at the first evaluation), checked here first so a
  bad value is one line before anything is built."""
  tcl, ev, model, optim = config.loss.tcl, config.eval, config.model, config.optim
  for key in ('networks', 'model.stage_sizes', 'optim.decay_at', 'eval.protocols',
              'eval.visualize_queries', 'eval.final_only', 'eval.agreement_networks'):
    if not isinstance(get(config, key), (tuple, list)):
      raise ConfigError(f'config {key}={get(config, key)!r}: a list is expected; write it as '
                        f"--config.{key}=\"({get(config, key)!r},)\" (Python tuple syntax)")
  from i2v_jax.evaluation.evaluators import EVALUATORS  # the evaluators table
  unknown = sorted(set(ev.final_only) - set(EVALUATORS))
  if unknown:
    raise ConfigError(f'config eval.final_only={tuple(ev.final_only)!r}: {unknown} unknown; '
                      f'choose from {" | ".join(EVALUATORS)}')
  from i2v_jax.networks import NETWORKS
  pair = tuple(ev.agreement_networks)
  if len(pair) != 2 or len(set(pair)) != 2 or set(pair) - set(NETWORKS):
    raise ConfigError(f'config eval.agreement_networks={pair!r}: two distinct networks '
                      f'from {" | ".join(NETWORKS)}')
  if not math.isfinite(optim.lr):
    raise ConfigError(f'config optim.lr={optim.lr!r}: must be a finite number greater than 0')
  if not 0 < optim.decay_factor <= 1:
    raise ConfigError(f'config optim.decay_factor={optim.decay_factor!r}: the multistep factor '
                      'must be in (0, 1] (0.1 = ten times smaller at each decay point)')
  if any(not 0 < f < 1 for f in optim.decay_at):
    raise ConfigError(f'config optim.decay_at={tuple(optim.decay_at)!r}: each decay point is a '
                      'fraction of train.num_steps in (0, 1)')
  if not 0 <= config.loss.id.label_smoothing < 1:
    raise ConfigError(f'config loss.id.label_smoothing={config.loss.id.label_smoothing!r}: '
                      'epsilon must be in [0, 1)')
  if model.last_stride not in (1, 2):
    raise ConfigError(f'config model.last_stride={model.last_stride!r}: 1 (re-ID) or 2 '
                      '(torchvision)')
  from i2v_jax.losses.objective import TERMS, active_terms  # the terms and their networks
  for term in TERMS.values():
    weight = get(config.loss, term.weight)
    if not (math.isfinite(weight) and weight >= 0):
      raise ConfigError(f'config loss.{term.weight}={weight!r}: a term\'s weight must be a '
                        'finite number, 0 (off) or more')
  try:
    active_terms(config.loss, tuple(config.networks))
  except ValueError as e:
    raise ConfigError(str(e)) from None
  if tcl.num_negatives < 1:
    raise ConfigError(f'config loss.tcl.num_negatives={tcl.num_negatives!r}: must be at least '
                      '1 (1 = the hardest pair; k > 1 = all positives and the k nearest '
                      'negatives)')
  if not (ev.rerank_k1 >= 1 and ev.rerank_k2 >= 1 and 0.0 <= ev.rerank_lambda <= 1.0):
    raise ConfigError(f'config eval.rerank_k1={ev.rerank_k1!r}, rerank_k2={ev.rerank_k2!r}, '
                      f'rerank_lambda={ev.rerank_lambda!r}: k1 and k2 must be at least 1 and '
                      'lambda in [0, 1] (defaults 20, 6, 0.3)')
  if ev.visualize < 0:
    raise ConfigError(f'config eval.visualize={ev.visualize!r}: must be 0 (off) or more')
  sizes = tuple(model.stage_sizes)
  if len(sizes) != 4 or any(not isinstance(n, int) or n < 1 for n in sizes):
    raise ConfigError(f'config model.stage_sizes={sizes!r}: blocks in each of the 4 stages, '
                      'each at least 1, e.g. (3, 4, 6, 3) for ResNet-50')
  if model.width < 1:
    raise ConfigError(f'config model.width={model.width!r}: the base width must be at least 1 '
                      '(64 for ResNet-50)')
  if model.nonlocal_blocks.enabled:
    for stage, blocks in enumerate(sizes, start=1):
      key = f'layer{stage}'
      indices = tuple(model.nonlocal_blocks[key]) if key in model.nonlocal_blocks else ()
      bad = [i for i in indices if not 0 <= i < blocks]
      if bad:
        raise ConfigError(f'config model.nonlocal_blocks.{key}={indices!r}: blocks {bad} do '
                          f'not exist in a stage of {blocks} blocks (model.stage_sizes='
                          f'{sizes}); use 0-based indices below {blocks}')
  problem = tag_problem(str(ev.tag))
  if problem:
    raise ConfigError(f'config eval.tag={ev.tag!r}: {problem}')


def check_devices(config, num_devices: int) -> None:
  """Each device holds whole identities: P must be a multiple of the device count."""
  if config.input.num_ids % num_devices:
    raise ConfigError(f'config input.num_ids={config.input.num_ids} is not a multiple of the '
                      f'{num_devices} devices (each holds whole identities); use a multiple '
                      f'of {num_devices}')


def metric_names(config) -> list:
  """The evaluation metrics ``train.best_metric`` may name: ``<protocol>/mAP``...
  and ``<evaluator>/<metric>`` of every other evaluator the config turns on."""
  protocols = list(config.eval.protocols)
  if config.eval.rerank:
    protocols += [f'{p}+rerank' for p in config.eval.protocols]
  ranks = [f'rank{k}' for k in (1, 5, 10, 20) if k <= config.eval.max_rank]
  from i2v_jax.evaluation import evaluators  # the others: <evaluator>/<metric>
  others = [f'{e.name}/{m}' for e in evaluators.EVALUATORS.values()
            if evaluators.wanted(config, e, final=True) for m in e.metrics]
  return [f'{p}/{m}' for p in protocols for m in ranks + list(eval_tables.METRICS)] + others


def nearest(word: str, choices: Sequence[str]) -> str:
  """The choice closest to ``word`` (for 'did you mean')."""
  import difflib
  return (difflib.get_close_matches(word, choices, n=1, cutoff=0.0) or [''])[0]


# Keys that say where a run is, not what it trains: never listed as overrides.
_WHERE = ('data.dir', 'mode', 'teacher.checkpoint', 'eval.from_workdir')


def overrides(config) -> Dict[str, object]:
  """The keys on which ``config`` differs from its preset's library defaults on its
  dataset (``preset=<p>,dataset=<d>``): what makes one ablation folder differ from
  another. A value of runlocal or a config file counts, as it should."""
  try:
    base = flatten(library_defaults.get_config(config.preset, config.data.name).to_dict())
  except ValueError:  # an unknown preset or dataset: validation names it
    return {}
  mine = flatten(config.to_dict())
  return {k: v for k, v in mine.items() if k not in _WHERE and base.get(k, object()) != v}


def describe_overrides(config, limit: int = 12) -> str:
  """``key=value, ...`` of `overrides` (at most ``limit``, then how many more), or
  'none' — for the start-up block, results.md and the sweep's report."""
  diff = overrides(config)
  shown = [f'{k}={v}' for k, v in list(diff.items())[:limit]]
  more = f', and {len(diff) - limit} more' if len(diff) > limit else ''
  return ', '.join(shown) + more if diff else 'none'


def warnings(config) -> List[str]:
  """Lines for settings that do not mean what they may look like they mean."""
  out = []
  tcl = config.loss.tcl
  if (tcl.weight == 0 and tcl.reverse > 0 and
      {'teacher', 'student'} <= set(config.networks)):
    out.append(f'loss.tcl.weight=0 turns TCL teacher -> student off, but reverse TCL is still '
               f'on (loss.tcl.reverse={tcl.reverse}); add --config.loss.tcl.reverse=0 for no '
               'TCL at all')
  return out


def flatten(d: dict, prefix: str = '') -> dict:
  out = {}
  for key, value in d.items():
    if isinstance(value, dict):
      out.update(flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = list(value) if isinstance(value, tuple) else value
  return out


def config_diff(old: dict, new: dict) -> list:
  """[(key, old, new)] for every leaf that differs (tuples and lists alike)."""
  a, b = flatten(old), flatten(new)
  return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def saved_path(workdir: str) -> str:
  return RunFolder(workdir).config


def load_saved(workdir: str, defaults: Optional[ml_collections.ConfigDict] = None
               ) -> ml_collections.ConfigDict:
  """The config a run in ``workdir`` was trained with (its ``config.json``), locked;
  keys added to the code since it was saved come from ``defaults`` (the library's,
  `i2v_jax.defaults.get_config`, unless given)."""
  path = saved_path(workdir)
  if not os.path.exists(path):
    raise ConfigError(f'{path} not found: --workdir={workdir} holds no trained run; '
                            'pass --config=<config file> to train one')
  try:
    with open(path) as f:
      saved = _tuples(migrate(json.load(f)))
  except (OSError, ValueError) as e:
    raise ConfigError(f'{path}: not a readable config ({type(e).__name__}: '
                      f'{" ".join(str(e).split())[:120]}); the run\'s config.json is damaged: '
                      'pass --config=<the config file it was trained with>') from None
  if not isinstance(saved, dict):
    raise ConfigError(f'{path}: a JSON object was expected; the run\'s config.json is damaged: '
                      'pass --config=<the config file it was trained with>')
  base = (defaults or library_defaults.get_config()).to_dict()
  config = ml_collections.ConfigDict(_merge(base, saved))
  config.lock()
  return config


def migrate(saved: dict) -> dict:
  """A saved config with every `RENAMED` key under its new name."""
  saved = json.loads(json.dumps(saved))
  for old, new in RENAMED.items():
    *old_path, old_leaf = old.split('.')
    node = saved
    for part in old_path:
      node = node.get(part, {}) if isinstance(node, dict) else {}
    if isinstance(node, dict) and old_leaf in node:
      value = node.pop(old_leaf)
      *new_path, new_leaf = new.split('.')
      target = saved
      for part in new_path:
        target = target.setdefault(part, {})
      target[new_leaf] = value
  return saved


def _merge(base: dict, over: dict) -> dict:
  out = dict(base)
  for key, value in over.items():
    out[key] = (_merge(base[key], value) if isinstance(value, dict)
                and isinstance(base.get(key), dict) else value)
  return out


def _tuples(d):
  """JSON lists back to tuples, as the config files write them."""
  if isinstance(d, dict):
    return {k: _tuples(v) for k, v in d.items()}
  return tuple(_tuples(v) for v in d) if isinstance(d, list) else d


def refuse_changes(config, workdir: str, may_change: Optional[Sequence[str]],
                   what: str) -> list:
  """Compares ``config`` with the workdir's ``config.json``: returns the allowed
  differences as 'key: old -> new' lines; any other difference is a ConfigError
  naming the keys (``what``: what the run is doing, for the message).
  ``may_change`` None allows every difference."""
  path = saved_path(workdir)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    saved = migrate(json.load(f))
  diff = config_diff(saved, json.loads(config.to_json_best_effort()))
  allowed = lambda k: may_change is None or any(
      k == p or (p.endswith('.') and k.startswith(p)) for p in may_change)
  # A key the saved config lacks was added to the code after the run; new keys
  # default to the behaviour from before they existed, so that is no change.
  known = flatten(saved)
  refused = [f'{k}: {a!r} -> {b!r}' for k, a, b in diff if not allowed(k) and k in known]
  if refused:
    raise ConfigError(
        f'{what}: the config differs from {path} in {"; ".join(refused)}. Drop --config to '
        f'use the saved one (changing only {", ".join(may_change)}), or use a new --workdir')
  return [f'{k}: {a!r} -> {b!r}' for k, a, b in diff]


def describe(config) -> str:
  """The resolved config, one ``key = value`` a line, and the presets and datasets
  to choose from (the library's tables)."""
  lines = [f'{k} = {v!r}' for k, v in flatten(json.loads(config.to_json_best_effort())).items()]
  return '\n'.join(lines + [
      '',
      f'presets: {" | ".join(library_defaults.PRESETS)} (--config=<file>:preset=<name>)',
      f'ablations (also preset=<name>): {" | ".join(library_defaults.ABLATIONS)}',
      f'datasets: {" | ".join(datasets.DATASETS)} (--config=<file>:dataset=<name>)'])


# ------------------------------------------------------------------ the command line


def parse_command_line(argv: Sequence[str], flag_values=None) -> list:
  """absl's parse of ``argv`` with the ``--config`` flag defined first: the
  ``--config`` file (``file.py[:arguments]``), or without one the saved config of
  ``--workdir`` (evaluate mode, resume), on which ``--config.<key>`` overrides
  apply. Returns the remaining arguments.

  Raises:
    ConfigError, one line, for every mistake in the flags or the config file
    (`flag_error_line`).
  """
  from absl import flags  # the command line's library, not the config check's
  from ml_collections import config_flags
  flag_values = flag_values or flags.FLAGS
  argv = list(argv)
  for arg in argv:
    key = arg.partition('=')[0][len('--config.'):] if arg.startswith('--config.') else ''
    if key in RENAMED:
      raise ConfigError(f'--config.{key} was renamed: use --config.{RENAMED[key]}')
  help_text = "experiment config file[:arguments]; default: the workdir's config.json"
  if any(a == '--config' or a.startswith('--config=') for a in argv):
    config_flags.DEFINE_config_file('config', None, help_text, flag_values=flag_values)
  else:
    workdir = [a.split('=', 1)[1] if '=' in a else b
               for a, b in zip(argv, argv[1:] + ['']) if a in ('--workdir',)
               or a.startswith('--workdir=')]
    if workdir and os.path.exists(saved_path(workdir[-1])):
      config_flags.DEFINE_config_dict('config', load_saved(workdir[-1]), help_text,
                                      flag_values=flag_values)
    elif workdir and any(a.startswith('--config.') for a in argv):
      where = ('no such folder' if not os.path.exists(workdir[-1]) else
               'no trained run there (no config.json)')
      raise ConfigError(f'--workdir={workdir[-1]}: {where}; --config.<key> overrides need '
                        'that folder to hold a trained run, or --config=<config file>')
    elif any(a.startswith('--config.') for a in argv):
      raise ConfigError('--config.<key> overrides need --config=<config file>, or a --workdir '
                        'that holds a trained run (its config.json)')
    else:
      config_flags.DEFINE_config_file('config', None, help_text, flag_values=flag_values)
  defaults = library_defaults.get_config()
  argv = [_list_value(a, defaults) for a in argv]
  try:
    rest = flag_values(argv)
    config = flag_values.config  # a config file that failed to load raises when first used:
    _ = None if config is None else config.to_dict()  # here, not in the middle of a run
  except SystemExit as e:  # sys.exit() inside the config file (absl's --help exits too)
    if any(a.lstrip('-') in ('help', 'helpfull', 'helpshort', 'h') for a in argv):
      raise
    raise ConfigError(f'{next((a for a in argv if a.startswith("--config=")), "--config")}: '
                      f'the config file exited (sys.exit({e.code!r})) instead of returning a '
                      'config from get_config()') from None
  except Exception as e:  # absl, ml_collections and the config file raise many kinds
    raise ConfigError(flag_error_line(e, argv)) from None
  return rest


def _list_value(arg: str, defaults) -> str:
  """``--config.<key>=a,b`` for a key whose value in ``defaults`` is a tuple -> the
  Python tuple ml_collections parses (``('a', 'b')``); numbers stay numbers. A
  value already written as a tuple or list is left as it is."""
  key, eq, value = arg.partition('=')
  if not key.startswith('--config.') or not eq or value.strip()[:1] in ('(', '['):
    return arg
  node = defaults
  for part in key[len('--config.'):].split('.'):
    if not hasattr(node, 'keys') or part not in node:
      return arg  # not a key: the parser names it
    node = node[part]
  if not isinstance(node, tuple):
    return arg

  def item(text):
    try:
      return ast.literal_eval(text)
    except (ValueError, SyntaxError):
      return text
  return f'{key}={tuple(item(e.strip()) for e in value.split(",") if e.strip())!r}'


def flag_error_line(error: BaseException, argv: Sequence[str]) -> str:
  """One line for an error parsing the flags: a misspelt key (at any depth, with
  ml_collections' nearest key as "did you mean"), a value of the wrong type or
  out of its choices, an unknown flag, or an error inside the config file (its
  last line, naming the file)."""
  text = str(error.args[0] if isinstance(error, KeyError) and error.args else error).strip()
  unknown = command_line.unknown_flag_line(  # absl's: a flag of the command, not a key
      text, ('--config', '--workdir', '--config.<key>=<value>', '--distributed'))
  if unknown:
    return unknown
  if isinstance(error, AttributeError) or 'Did you mean' in text:
    return _misspelt_key(text, argv)
  group = re.match(r"flag (--config\.([\w.]+))=.*Failed to parse .* as a ConfigDict", text)
  if group:  # a value given to a group of keys
    return (f'{group.group(1)}: {group.group(2)} is a group of keys, not one value; set a key '
            f'in it (--config.{group.group(2)}.<key>=<value>; --config.mode=print lists them)')
  if isinstance(error, KeyError):  # a misspelt group inside a key: the nearest whole key
    flags_given = [a.split('=', 1)[0] for a in argv if a.startswith('--config.')]
    flag = next((f for f in flags_given if f'.{text.strip(chr(39))}.' in f + '.'), '')
    if flag:
      keys = list(flatten(library_defaults.get_config().to_dict()))
      return (f'{flag}: no such config key; did you mean '
              f'--config.{nearest(flag[len("--config."):], keys)}? (--config.mode=print '
              'lists every key)')
  unreadable = re.search(r'\[Errno \d+\] ([^:]+): (.*?)\s*$', text)
  if isinstance(error, OSError) and unreadable:  # the --config file is not there
    return (f'--config={unreadable.group(2).strip(chr(39))}: {unreadable.group(1).lower()}; '
            'pass a config file (configs/base.py, configs/synthetic_cpu.py or your own)')
  if 'Traceback' in text:  # raised inside the config file: its last line says what
    text = text.splitlines()[-1]
  text = re.sub(r'^(\w+Error: )+', '', text)
  # absl's "(reason, value)" tuples, as words
  text = ' '.join(re.sub(r"\('([^']+)', '([^']*)'\)", r'\1: \2', text).split())
  config_file = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), '')
  if config_file and not text.startswith(('flag --', '--config')):  # raised by the file
    text = f'--config={config_file}: {text}'
  return text


def _misspelt_key(message: str, argv: Sequence[str]) -> str:
  """ml_collections' error for ``--config.a.bad=v`` -> the flag and, when it has
  one, the nearest existing key."""
  found = re.search(r'Did you mean "([^"]+)" instead of "([^"]+)"', message)
  leaf = found.group(2) if found else re.sub(r'\W', '', message.split('\\n')[0])
  flag = next((a.split('=', 1)[0] for a in argv if a.startswith('--config.')
               and '.' + leaf in a.split('=', 1)[0]), f'--config.<...>.{leaf}')
  listing = ' (--config.mode=print lists every key)'
  if not found:
    return f'{flag}: no such config key{listing}'
  head, _, tail = flag.partition('.' + leaf)
  return f'{flag}: no such config key; did you mean {head}.{found.group(1)}{tail}?{listing}'
