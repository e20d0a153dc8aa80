"""The training loop, evaluation during training and evaluate mode (importable).

`train_and_log` checks the data (``data.dir``, or the synthetic dataset in
``<workdir>/data`` that `i2v_jax.main` builds on demand), creates or resumes the
train state (`_start`), runs the sharded step (`_run_steps`), logs (console,
metrics.jsonl, TensorBoard), runs the configured evaluators every
``train.eval_every`` steps (`i2v_jax.evaluation.evaluators`), saves checkpoints
and stops cleanly on SIGTERM and Ctrl-C (it saves the step it is at). What the
loop does besides (the non-finite check, the best checkpoint, warnings) are the
hooks of `i2v_jax.hooks`. `evaluate_checkpoint` evaluates a trained workdir.
`i2v_jax.main` is only the command line around these.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sys
import time

import jax
from tqdm import tqdm

from i2v_jax import (atomic, checkpoint, config_lib, errors, evaluation, hooks,
                     input_pipeline, locks, plots, records, train_step)
from i2v_jax.dataset_folder import Dataset
from i2v_jax.run_folder import RunFolder
from i2v_jax.logging_utils import MetricWriter
from i2v_jax.models import convert


def open_dataset(config, workdir: str, *, training: bool = True) -> Dataset:
  """The dataset ``config`` names, opened once (``data.dir``, or ``<workdir>/data``
  for the synthetic set, which the command line builds there on demand), and
  checked against the config (`Dataset.check_config`)."""
  if not config.data.dir and config.data.name != 'synthetic':
    raise config_lib.ConfigError(f'config data.name={config.data.name!r} needs '
                                 '--config.data.dir=<output of python -m data_prep.build>')
  dataset = Dataset.open(config.data.dir or RunFolder(workdir).data)
  dataset.check_config(config, training=training)
  return dataset


def dataset_record(dataset: Dataset) -> dict:
  """What a run records of the dataset it trains on (``dataset.json``): a resume
  on another folder's data, even with as many identities, is refused by it."""
  blob = json.dumps(dataset.metadata, sort_keys=True).encode()
  return {'name': dataset.name, 'dir': os.path.abspath(dataset.dir),
          'num_classes': dataset.num_classes, 'metadata_sha256': hashlib.sha256(blob).hexdigest()}


def check_same_dataset(run: RunFolder, dataset: Dataset) -> None:
  """Resuming: the dataset is the one the run started on (its ``dataset.json``)."""
  if not os.path.exists(run.dataset_record):
    return  # a run from before the record existed
  with open(run.dataset_record) as f:
    trained = json.load(f)
  now = dataset_record(dataset)
  if trained.get('metadata_sha256') != now['metadata_sha256']:
    raise records.DatasetError(
        f'resuming the run in {run.root}: it trained on {trained.get("name")!r} in '
        f'{trained.get("dir")} ({run.dataset_record}) but data.dir holds another build '
        f'({now["dir"]}, metadata.json differs); point --config.data.dir at the run\'s '
        'dataset, or train into a new --workdir')


def check_workdir(workdir: str) -> None:
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise config_lib.ConfigError(f'--workdir={workdir} is a file; choose a folder (new, or '
                                 'a run to resume or evaluate)')


def workdir_lock(path: str, what: str):
  """One process writes here: the lead process holds ``path`` (`locks.hold`)."""
  if jax.process_index() != 0:
    return contextlib.nullcontext()
  return locks.hold(path, what)


def check_files(config, workdir: str):
  """The files the config names, before anything is built: the pretrained file
  reads (its fit to the networks is checked with the dataset, `preflight`) and a
  teacher checkpoint is a run (only when the run starts: a resumed run holds it).
  Returns the pretrained arrays (None without a file)."""
  pretrained = convert.load_npz(config.model.pretrained) if config.model.pretrained else None
  starting = not os.path.isdir(RunFolder(workdir).checkpoints)
  if config.teacher.checkpoint and 'teacher' in config.networks and starting:
    checkpoint.check_run(config.teacher.checkpoint, 'config teacher.checkpoint')
  return pretrained


def preflight(config, workdir: str) -> Dataset:
  """Every check of the user's input that needs no JAX backend, before one starts:
  the config, the workdir, the dataset (opened once: metadata, indexes, shard
  headers, and that it is the dataset the config names), the pretrained file's
  contents, and that a teacher checkpoint is a run with one (only when the run
  starts: a resumed run holds its teacher). Returns the dataset."""
  config_lib.validate(config)
  check_workdir(workdir)
  pretrained = check_files(config, workdir)
  dataset = open_dataset(config, workdir)
  if pretrained is not None:
    train_step.check_pretrained(config, dataset.num_classes, pretrained)
  return dataset


def train_and_log(config, workdir: str) -> dict:
  """The training loop; returns the last logged metrics (and the last evaluation's).
  One training process per workdir: a second is refused (`locks.Locked`)."""
  dataset = preflight(config, workdir)
  config_lib.check_devices(config, jax.device_count())
  run = RunFolder(workdir)
  with _tidy_if_refused(workdir), workdir_lock(run.lock, f'--workdir={workdir}'):
    return _train_and_log(config, run, dataset)


@contextlib.contextmanager
def _tidy_if_refused(workdir: str):
  """Bad input leaves nothing behind: a workdir this call created that holds only
  its lock file when a user error stops the run is removed again."""
  existed = os.path.exists(workdir)
  try:
    yield
  except errors.UserError:
    lock = os.path.basename(RunFolder(workdir).lock)
    if not existed and os.path.isdir(workdir) and os.listdir(workdir) in ([], [lock]):
      for name in os.listdir(workdir):
        os.remove(os.path.join(workdir, name))
      os.rmdir(workdir)
    raise


def _train_and_log(config, run: RunFolder, dataset: Dataset) -> dict:
  lead, total = jax.process_index() == 0, config.train.num_steps
  mesh = train_step.make_mesh()
  state, start, ckpt = _start(config, run, dataset, mesh)
  step_fn = train_step.make_train_step(config, mesh)
  ds = input_pipeline.train_dataset(
      dataset, config, seed=config.seed, start_step=start, num_steps=total - start,
      process_index=jax.process_index(), process_count=jax.process_count(), verbose=lead)
  writer = MetricWriter(run.root, enabled=lead, resumed_at=start)
  # A bar only on a terminal: piped or redirected, the log lines are the progress
  # (no carriage-return redraws in the log file).
  bar = tqdm(total=total, initial=start, disable=not lead or not sys.stderr.isatty(),
             unit='step', dynamic_ncols=True)
  loop = hooks.Loop(config, ckpt, lead, state)
  encode = evaluation.encode_fns(config, dataset.num_classes)  # compiled at the first evaluation

  def evaluate(done: int) -> dict:
    """Every configured evaluator on the state after step ``done``; its scalars
    are logged and handed to the hooks (the best checkpoint)."""
    t = time.perf_counter()
    if lead:
      bar.write(f'evaluating step {done}…')
    result = evaluation.run(config, dataset, loop.state, dataset.num_classes, mesh,
                            workdir=run.root, step=done, verbose=lead, encode=encode,
                            final=done == total, title=heading(
                                config, dataset, done, 'final' if done == total
                                else 'during training'))
    if lead:
      bar.write(f'evaluated in {time.perf_counter() - t:.1f} s')
    writer.write(done, result.scalars)
    hooks.after_evaluation(loop, done, result.scalars)
    return result.scalars

  with _stop_on_signal(lead) as stop:
    last = _run_steps(loop, step_fn, input_pipeline.numpy_batches(ds), start, mesh, writer,
                      bar, evaluate, stop)
  if start == total and config.train.eval_every:
    # Nothing left to train (a finished run started again): evaluate it, with
    # this command's evaluation settings, replacing the values logged at `total`.
    if lead:
      print(f'the run in {run.root} is finished (step {total} of {total}): nothing to train; '
            'evaluating it again with this command\'s evaluation settings (its step '
            f'{total} evaluation values are replaced; raise train.num_steps to train on)',
            flush=True)
    writer.redo_step(total)
    last.update(evaluate(total))
  bar.close()
  ckpt.wait()
  ckpt.close()
  writer.close()
  pictures = plots.write(run.root) if lead else []
  if pictures:
    print('wrote ' + ', '.join(pictures), flush=True)
  return last


def _start(config, run: RunFolder, dataset: Dataset, mesh):
  """The state to train from (fresh, or the run's newest whole checkpoint), the
  step it is at and the run's checkpoints; the run's records written and its
  start-up block printed. A refusal (a config change resuming may not make,
  another dataset, a frozen teacher that does not fit) happens before anything
  is written."""
  lead, workdir = jax.process_index() == 0, run.root
  # Resuming: only what RESUME_MAY_CHANGE names may differ from the saved config.
  resuming = os.path.isdir(run.checkpoints)
  changes = config_lib.refuse_changes(
      config, workdir, config_lib.RESUME_MAY_CHANGE if resuming else None,
      f'resuming the run in {workdir}')
  if resuming:
    check_same_dataset(run, dataset)
  os.makedirs(workdir, exist_ok=True)
  saved = bool(checkpoint.step_folders(run.checkpoints))
  state = train_step.initial_state(config, dataset.num_classes, mesh, restore_target=saved)
  ckpt = checkpoint.Checkpoints(run, config.train.keep_checkpoints, config.train.best_metric)
  start = 0
  if saved:
    state, start = ckpt.restore(state)
  if lead:
    if changes:
      print('config changed since the last run in this workdir:\n  ' + '\n  '.join(changes))
    atomic.write_json(json.loads(config.to_json_best_effort()), run.config)
    if not os.path.exists(run.dataset_record):
      atomic.write_json(dataset_record(dataset), run.dataset_record)
    print(startup_block(config, dataset, mesh, workdir, start,
                        ckpt.directory if start else None), flush=True)
    for line in config_lib.warnings(config):
      print(f'warning: {line}', flush=True)
  return state, start, ckpt


@contextlib.contextmanager
def _stop_on_signal(lead: bool):
  """Yields {'signal': None}; SIGTERM or a first Ctrl-C sets it (the loop saves
  after this step and exits); a second Ctrl-C stops at once (what is saved is
  what the last checkpoint holds). Python's handlers are back afterwards."""
  stop = {'signal': None}

  def on_signal(signum, _):
    if stop['signal'] is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt
    stop['signal'] = signum
    if lead:
      print(f'signal {signum}: saving after this step, then exiting'
            + (' (Ctrl-C again to stop at once)' if signum == signal.SIGINT else ''),
            file=sys.stderr, flush=True)
  handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield stop
  finally:  # past the loop, a Ctrl-C is Python's again (and the caller's, in-process)
    for signum, handler in handlers.items():
      signal.signal(signum, handler)


class _Clock:
  """The input wait and the speed between two log lines."""

  def __init__(self, config, start: int):
    c = config.input
    self.frames_per_step = c.num_ids * c.tracklets_per_id * c.clip_len
    self.restart(start)

  def restart(self, step: int) -> None:
    self.wait, self.since, self.at = 0.0, time.perf_counter(), step

  def next_batch(self, batches):
    t = time.perf_counter()
    batch = next(batches)
    self.wait += time.perf_counter() - t
    return batch

  def log_values(self, done: int, metrics) -> dict:
    """The step's metrics as floats, with images/s and the input wait since the last line."""
    metrics = {k: float(v) for k, v in metrics.items()}
    steps, elapsed = done - self.at, time.perf_counter() - self.since
    metrics['images_per_s'] = steps * self.frames_per_step / elapsed
    metrics['data_wait_s'] = self.wait / steps
    metrics['data_wait_fraction'] = self.wait / elapsed
    self.restart(done)
    return metrics


def _run_steps(loop: hooks.Loop, step_fn, batches, start: int, mesh, writer, bar, evaluate,
               stop) -> dict:
  """Steps ``start`` to ``train.num_steps``: log (and the hooks), save, evaluate,
  stop after a signal's step. Returns the last logged metrics and evaluation."""
  config, lead = loop.config, loop.lead
  total, every = config.train.num_steps, config.train
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(train_step.AXIS))
  clock, last = _Clock(config, start), {}
  in_flight = None  # the previous step's metrics: the bar counts finished steps
  for step in range(start, total):
    local = clock.next_batch(batches)
    batch = {k: jax.make_array_from_process_local_data(sharding, local[k])
             for k in ('clips', 'labels') + input_pipeline.AUGMENTATION_KEYS}
    if step == start and lead:
      bar.write('compiling the train step…')
      t_compile = time.perf_counter()
    loop.state, metrics = step_fn(loop.state, batch)
    done = step + 1
    if step == start:
      jax.block_until_ready(metrics)
      if lead:
        bar.write(f'compiled and ran step {done} in {time.perf_counter() - t_compile:.1f} s')
      bar.unpause()  # the bar's rate and ETA leave the compilation out
      if done % every.log_every and done != total:  # so does the first images/s
        clock.restart(done)
    if in_flight is not None:
      jax.block_until_ready(in_flight)
      bar.update(1)
    in_flight = metrics
    if done % every.log_every == 0 or done == total:
      metrics = clock.log_values(done, jax.device_get(metrics))
      hooks.after_log(loop, done, metrics)  # a non-finite loss stops here, unwritten
      writer.write(done, metrics)
      bar.set_postfix(loss=f'{metrics["loss/total"]:.4f}', lr=f'{metrics["lr"]:.2e}')
      if lead:
        bar.write(log_line(done, metrics))
      last.update(metrics)
    # Saved before it is evaluated: an evaluation that fails loses no training.
    if done % every.checkpoint_every == 0 or done == total or stop['signal']:
      loop.ckpt.save(done, loop.state, force=True)
    if every.eval_every and (done % every.eval_every == 0 or done == total):
      jax.block_until_ready(in_flight)  # the bar counts this step before the evaluation
      bar.update(done - bar.n)
      in_flight = None
      with tqdm.external_write_mode():  # blocks on their own lines, the bar redrawn after
        last.update(evaluate(done))
    if stop['signal']:
      loop.ckpt.wait()
      if lead:
        print(f'signal {stop["signal"]}: saved step {done}, exiting', flush=True)
      sys.exit(128 + stop['signal'])
  if in_flight is not None:
    jax.block_until_ready(in_flight)
    bar.update(1)
  return last


def log_line(step: int, metrics: dict) -> str:
  """The console line of a logged step: the weighted total, every loss term as
  computed (before its weight), the learning rate, speed and the input wait."""
  terms = ' '.join(f'{k[len("loss/"):]}={v:.4f}' for k, v in sorted(metrics.items())
                   if k.startswith('loss/') and k != 'loss/total')
  return (f'step {step}: loss {metrics["loss/total"]:.4f} weighted (terms unweighted: {terms}) '
          f'lr {metrics["lr"]:.2e} '
          f'{metrics["images_per_s"]:.0f} img/s, data wait {metrics["data_wait_s"]:.3f} s/step '
          f'({metrics.get("data_wait_fraction", 0.0):.0%} of the time)')


def startup_block(config, dataset: Dataset, mesh, workdir, start, resumed_from) -> str:
  """What this run is, printed before it starts."""
  c, meta = config.input, dataset.metadata
  clips = c.num_ids * c.tracklets_per_id
  return '\n'.join([
      f'preset     {config.preset} (networks: {", ".join(config.networks)}), seed {config.seed}',
      f'overrides  {config_lib.describe_overrides(config)}',
      f'dataset    {dataset.name} in {dataset.dir}: {dataset.num_classes} training ids, '
      + ', '.join(f'{s} {v["tracklets"]}' for s, v in meta['splits'].items()) + ' tracklets',
      f'devices    {mesh.size} {jax.devices()[0].platform} device(s), '
      f'{jax.process_count()} process(es), mesh {dict(mesh.shape)}',
      f'batch      {clips} clips ({c.num_ids} ids x {c.tracklets_per_id}) of {c.clip_len} '
      f'frames at {c.height}x{c.width}'
      + (f'; student: {c.student_frames} images a clip' if 'student' in config.networks
         else ''),
      'start      ' + (f'backbone from {config.model.pretrained}' if config.model.pretrained
                       else 'random initialisation')
      + (f'; teacher ({config.teacher.mode}) from {config.teacher.checkpoint}'
         f'/checkpoints/{teacher_step(config.teacher.checkpoint)}'
         if config.teacher.checkpoint and 'teacher' in config.networks else ''),
      f'steps      {start} -> {config.train.num_steps} (log every {config.train.log_every}, '
      f'evaluate every {config.train.eval_every or "—"})',
      f'workdir    {workdir}' + (f' (resumed from {resumed_from}/{start})'
                                 if resumed_from else '')])


def teacher_step(workdir: str) -> str:
  """The step of the teacher checkpoint `checkpoint.load_teacher` reads (latest)."""
  steps = checkpoint.step_folders(RunFolder(workdir).checkpoints)
  return str(steps[-1]) if steps else '?'


def heading(config, dataset: Dataset, step: int, which: str) -> str:
  """The title of a results table: what was evaluated, and how."""
  ev = config.eval
  encoders = evaluation.encoders(config)
  return (f'{dataset.name}, {config.preset}, step {step} ({which}); images: '
          f'{encoders["image"]}, videos: {encoders["video"]}; {ev.distance} distance, '
          f'{ev.ap_mode} AP' + (', with re-ranking' if ev.rerank else '')
          + f'; overrides of the preset: {config_lib.describe_overrides(config)}')


def evaluate_checkpoint(config, workdir: str) -> dict:
  """Evaluates ``eval.checkpoint`` (latest | best | step) of the workdir (or of
  ``eval.from_workdir``); returns the results.

  The config must be the trained run's (its ``config.json``) but for
  ``config_lib.EVALUATE_MAY_CHANGE``: the evaluation settings and the dataset,
  so a run trained on one dataset is evaluated on another (cross-domain; its
  networks and classifier stay the run's). Results go to their own folder,
  ``eval/<step>-<checkpoint>[-<tag>]`` (written under a staging name, renamed
  when complete; an existing one is never overwritten), listed in
  ``<workdir>/eval/index.jsonl``; the training run's ``results.*`` are never touched.
  Returns the `evaluation.Evaluation`.
  """
  config_lib.validate(config)
  check_workdir(workdir)
  source = config.eval.from_workdir or workdir
  checkpoint.check_run(  # before any JAX work
      source, 'config eval.from_workdir' if config.eval.from_workdir else '--workdir',
      f'train into --workdir={source} first (config mode=train) or point --workdir (or '
      'eval.from_workdir) at a trained run')
  run = RunFolder(workdir)
  with _tidy_if_refused(workdir), workdir_lock(run.eval_lock, f'evaluation into {run.eval_root}'):
    return _evaluate_checkpoint(config, run, RunFolder(source))


def _evaluate_checkpoint(config, run: RunFolder, source: RunFolder) -> dict:
  config_lib.refuse_changes(config, source.root, config_lib.EVALUATE_MAY_CHANGE,
                            f'evaluating the run in {source.root}')
  dataset = open_dataset(config, run.root, training=False)
  which = str(config.eval.checkpoint)
  num_classes = checkpoint.trained_classes(source.checkpoint_dir(which))
  os.makedirs(run.root, exist_ok=True)
  mesh = train_step.make_mesh()
  state = train_step.initial_state(config, num_classes, mesh, restore_target=True)
  ckpt = checkpoint.Checkpoints(source, config.train.keep_checkpoints, config.train.best_metric)
  state, step = ckpt.restore_for_eval(state, which)
  ckpt.close()
  out = run.evaluation(step, which, config.eval.tag)
  if os.path.exists(out.root):
    raise config_lib.ConfigError(
        f'{out.root} already holds an evaluation of step {step} ({run.eval_index}); pass '
        '--config.eval.tag=<name> to keep both, or delete that folder to redo it')
  staging = RunFolder(out.root + '.partial')
  lead = jax.process_index() == 0
  if lead:
    shutil.rmtree(staging.root, ignore_errors=True)  # an evaluation that did not finish
    os.makedirs(staging.root)
    print(f'evaluating {source.root} ({config.preset}, {which} checkpoint: step {step}) on '
          f'{dataset.dir} into {out.root}', flush=True)
  t = time.perf_counter()
  result = evaluation.run(config, dataset, state, num_classes, mesh, workdir=staging.root,
                          step=step, title=heading(config, dataset, step, which))
  if lead:
    plots.cmc_figure(staging.root)
    os.rename(staging.root, out.root)
    print(f'evaluated in {time.perf_counter() - t:.1f} s; wrote {out.cmc_plot}', flush=True)
    line = {'dir': run.relative(out.root), 'source': os.path.abspath(source.root),
            'step': step, 'checkpoint': which, 'tag': config.eval.tag,
            'dataset': dataset.name, 'data_dir': os.path.abspath(dataset.dir),
            'eval': json.loads(config.eval.to_json_best_effort()),
            'scalars': result.scalars,
            'finished': time.strftime('%Y-%m-%dT%H:%M:%S')}
    atomic.append_line(run.eval_index, json.dumps(line, sort_keys=True))
  return result
