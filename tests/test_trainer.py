"""Train and evaluate end to end in process (as flax's examples/imagenet train_test)."""

import importlib.util
import io
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from configs import base
from i2v_jax.run_folder import RunFolder
from i2v_jax import trainer
from i2v_jax.errors import UserError
from i2v_jax.dataset_folder import Dataset


def tiny_config(data_dir, steps=4):
  c = base.get_config('preset=mdkt,runlocal')
  c.data.dir = data_dir
  c.model.width = 4
  c.input.num_ids, c.input.tracklets_per_id = 8, 2  # P: a multiple of the 8 test devices
  c.train.num_steps = steps
  c.train.log_every = 2
  c.train.eval_every = steps
  c.train.checkpoint_every = steps
  return c


def test_train_then_evaluate_in_process(tmp_path, cli_data_dir):
  workdir = str(tmp_path / 'run')
  c = tiny_config(cli_data_dir)
  last = trainer.train_and_log(c, workdir)
  assert np.isfinite(last['loss/total']) and 'i2v/mAP' in last
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  assert results['step'] == 4
  assert set(results['protocols']) == {'i2v', 'v2v', 'i2i', 'v2i'}
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    steps = [json.loads(line)['step'] for line in f if 'loss/total' in line]
  assert steps == [2, 4]
  assert os.listdir(os.path.join(workdir, 'checkpoints_best')) == ['4']
  # Evaluate mode on the same checkpoint gives the same numbers.
  c.mode, c.eval.checkpoint, c.eval.from_workdir = 'evaluate', 'best', workdir
  again = trainer.evaluate_checkpoint(c, str(tmp_path / 'eval'))
  for protocol in ('i2v', 'v2v'):
    assert again.ranking[protocol]['mAP'] == results['protocols'][protocol]['mAP']


@pytest.fixture(scope='session')
def exported_run(tmp_path_factory, cli_data_dir):
  """A 2-step mdkt run, evaluated at step 2, that exported its evaluation features
  (train_and_log, in process). Trained once per session (and test worker): tests
  that only read use it as it is; tests that change it work on a `copy_of` it."""
  workdir = str(tmp_path_factory.mktemp('exported') / 'run')
  c = tiny_config(cli_data_dir, steps=2)
  c.eval.export = True
  trainer.train_and_log(c, workdir)
  return workdir


@pytest.fixture(scope='session')
def four_step_run(tmp_path_factory, cli_data_dir):
  """A 4-step run with checkpoints 2 and 4 (every 2, 3 kept) and no evaluation."""
  workdir = str(tmp_path_factory.mktemp('four_steps') / 'run')
  trainer.train_and_log(four_step_config(cli_data_dir), workdir)
  return workdir


def four_step_config(data_dir):
  c = tiny_config(data_dir, steps=4)
  c.train.checkpoint_every, c.train.eval_every, c.train.keep_checkpoints = 2, 0, 3
  return c


def copy_of(run, tmp_path):
  """A private copy of a shared trained run (its workdir) to damage or train on."""
  workdir = str(tmp_path / 'run')
  shutil.copytree(run, workdir)
  return workdir


@pytest.mark.xdist_group('exported_run')  # the same worker: one run
def test_python_api_reproduces_the_exported_features(tmp_path, cli_data_dir, exported_run):
  import i2v_jax
  from i2v_jax import input_pipeline
  workdir = exported_run
  model = i2v_jax.load(workdir, checkpoint='latest')
  assert set(model.variables) == {'student'}  # mdkt: images and videos by the student
  query = input_pipeline.TrackletReader(Dataset.open(cli_data_dir), 'query')
  gallery = input_pipeline.TrackletReader(Dataset.open(cli_data_dir), 'gallery')
  exported = {k: np.load(os.path.join(workdir, f'features-{k}.npz'))
              for k in ('query-image', 'gallery-video')}
  images = [query.frames(i)[0] for i in range(len(query.rows))]  # JPEG bytes, first frames
  np.testing.assert_allclose(model.embed_images(images), exported['query-image']['features'],
                             rtol=1e-4, atol=1e-5)
  tracklets = [gallery.frames(i) for i in range(len(gallery.rows))]
  np.testing.assert_allclose(model.embed_tracklets(tracklets),
                             exported['gallery-video']['features'], rtol=1e-4, atol=1e-5)
  # Decoded arrays, file paths and a PNG of the decoded frame give the JPEG's features.
  path = tmp_path / 'q0.jpg'
  path.write_bytes(images[0])
  decoded = np.asarray(input_pipeline._tf().io.decode_jpeg(images[0],
                                                            dct_method='INTEGER_ACCURATE'))
  png = io.BytesIO()
  Image.fromarray(decoded).save(png, format='PNG')
  np.testing.assert_allclose(model.embed_images([str(path), decoded, png.getvalue()]),
                             exported['query-image']['features'][[0, 0, 0]], rtol=1e-4, atol=1e-5)


def _cosine(a, b):
  """1 - cos(a_i, b_j), from the definition."""
  out = np.zeros((len(a), len(b)))
  for i, x in enumerate(a):
    for j, y in enumerate(b):
      out[i, j] = 1.0 - float(np.dot(x, y)) / (np.linalg.norm(x) * np.linalg.norm(y))
  return out


@pytest.mark.xdist_group('exported_run')  # the same worker: one run
def _search_folders(tmp_path, cli_data_dir):
  """Three query images in ``q/`` and the gallery as tracklet folders of frame
  files in ``g/``, from the synthetic dataset; returns the query rows and the
  gallery reader."""
  from i2v_jax import input_pipeline
  query = input_pipeline.TrackletReader(Dataset.open(cli_data_dir), 'query')
  gallery = input_pipeline.TrackletReader(Dataset.open(cli_data_dir), 'gallery')
  rows = [0, len(query.rows) // 2, len(query.rows) - 1]
  (tmp_path / 'q').mkdir()
  for i in rows:
    (tmp_path / 'q' / f'q{i:02d}.jpg').write_bytes(query.frames(i)[0])
  for g in range(len(gallery.rows)):
    (tmp_path / 'g' / f't{g:03d}').mkdir(parents=True)
    for k, frame in enumerate(gallery.frames(g)):
      (tmp_path / 'g' / f't{g:03d}' / f'{k:04d}.jpg').write_bytes(frame)
  return rows, gallery


def test_search_ranks_a_folder_as_evaluation_does(tmp_path, cli_data_dir, exported_run, capsys):
  from i2v_jax import search
  rows, gallery = _search_folders(tmp_path, cli_data_dir)
  out = str(tmp_path / 'out')
  assert search.main(['search', f'--workdir={exported_run}', f'--query={tmp_path / "q"}',
                      f'--gallery={tmp_path / "g"}', '--checkpoint=latest', '--top=5',
                      '--export', f'--output_dir={out}']) == 0
  printed = capsys.readouterr().out
  qf = np.load(os.path.join(exported_run, 'features-query-image.npz'))['features'][rows]
  gf = np.load(os.path.join(exported_run, 'features-gallery-video.npz'))['features']
  expected = _cosine(qf.astype(np.float64), gf.astype(np.float64))  # evaluation's distances
  for q, row in zip(rows, expected):
    top = np.argsort(row, kind='stable')[:5]
    block = printed.split(f'q{q:02d}.jpg:\n')[1].splitlines()[:5]
    assert [line.split()[1] for line in block] == [f't{g:03d}' for g in top]
    np.testing.assert_allclose([float(line.split()[2]) for line in block], row[top], atol=2e-4)
  saved = np.load(os.path.join(out, 'features.npz'))
  assert list(saved['query_names']) == [f'q{i:02d}.jpg' for i in rows]
  np.testing.assert_allclose(saved['distances'], expected, atol=1e-4)
  with Image.open(os.path.join(out, 'ranked.png')) as picture:
    assert picture.size[1] > 3 * 64  # a row per query
  # A folder of images is searched with the image network, as I2I is evaluated.
  (tmp_path / 'gi').mkdir()
  for g in range(6):
    (tmp_path / 'gi' / f'i{g}.jpg').write_bytes(gallery.frames(g)[0])
  found = search.search(exported_run, str(tmp_path / 'q' / 'q00.jpg'), str(tmp_path / 'gi'),
                        checkpoint='latest', output_dir=out, verbose=False)
  gi = np.load(os.path.join(exported_run, 'features-gallery-image.npz'))['features'][:6]
  assert found['gallery_kind'] == 'image'
  np.testing.assert_allclose(found['distances'], _cosine(qf[:1], gi), atol=1e-4)
  # Nothing to search: one line, exit 2.
  (tmp_path / 'empty').mkdir()
  assert search.main(['search', f'--workdir={exported_run}', f'--query={tmp_path / "empty"}',
                      f'--gallery={tmp_path / "g"}']) == 2
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and err.startswith('error: --query=') and 'holds no images' in err


@pytest.mark.xdist_group('exported_run')  # the same worker: one run
def test_training_draws_its_losses_and_cmc_and_the_command_redraws_them(tmp_path, exported_run,
                                                                        capsys):
  from i2v_jax import plots
  for name in ('training.png', 'cmc.png'):
    with Image.open(os.path.join(exported_run, name)) as picture:
      assert picture.format == 'PNG' and picture.size[0] >= 600
  lines = plots.read_metrics(exported_run)
  assert plots.series(lines, 'loss/total')[0] == [2]  # log_every=2 of 2 steps
  copy = str(tmp_path / 'copy')
  os.makedirs(copy)
  for name in ('metrics.jsonl', 'results.json'):
    shutil.copy(os.path.join(exported_run, name), copy)
  assert plots.main(['plots', f'--workdir={copy}']) == 0
  assert sorted(os.listdir(copy)) == ['cmc.png', 'metrics.jsonl', 'results.json', 'training.png']
  assert plots.main(['plots', f'--workdir={tmp_path}']) == 2  # nothing to draw: one line
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and 'train or evaluate into it first' in err


def test_search_keeps_and_searches_an_encoded_gallery_file(tmp_path, cli_data_dir, exported_run,
                                                            capsys):
  """--save_gallery keeps the searched folder's encoding; --gallery=<file> then
  finds the same entries at the same distances without encoding it again, and
  refuses another model's file, re-ranking and a picture-less folder index, each
  in one line."""
  from i2v_jax import search
  from i2v_jax.gallery import Gallery
  _search_folders(tmp_path, cli_data_dir)
  kept = str(tmp_path / 'city.npz')
  folder = search.search(exported_run, str(tmp_path / 'q'), str(tmp_path / 'g'),
                         checkpoint='latest', top=5, output_dir=str(tmp_path / 'o1'),
                         save_gallery=kept, verbose=False)
  assert kept in folder['paths']
  stored = Gallery.load(kept)
  assert list(stored.names) == folder['gallery_names']
  from_file = search.search(exported_run, str(tmp_path / 'q'), kept, checkpoint='latest',
                            top=5, output_dir=str(tmp_path / 'o2'), export=True, verbose=False)
  assert from_file['gallery_kind'] == 'file' and from_file['distances'] is None
  for a, b in zip(folder['ranked'], from_file['ranked']):
    assert [j for j, _ in a] == [j for j, _ in b]
    np.testing.assert_allclose([d for _, d in a], [d for _, d in b], atol=1e-5)
  if importlib.util.find_spec('faiss'):  # the deploy extra (.ci/run installs it)
    # --index=pq with every row shortlisted is exact search: on a gallery file of
    # 40 rows (a pq index learns 16 codes a sub-vector), the stored rows and noisy copies.
    rows = np.concatenate([stored.features, stored.features[np.arange(40) % len(stored.names)]
                           + 0.05 * np.random.default_rng(0).standard_normal(
                               (40, stored.features.shape[1]))])[:40]
    big = str(tmp_path / 'big.npz')
    Gallery.build(rows, [f'e{i}' for i in range(40)], [0] * 40, stored.model_id).save(big)
    ranked = {index: search.search(exported_run, str(tmp_path / 'q'), big, checkpoint='latest',
                                   top=5, output_dir=str(tmp_path / index), index=index,
                                   candidates=40, verbose=False)['ranked']
              for index in ('exact', 'pq')}
    for a, b in zip(ranked['exact'], ranked['pq']):
      assert [j for j, _ in a] == [j for j, _ in b]
      np.testing.assert_allclose([d for _, d in a], [d for _, d in b], atol=1e-6)
  saved = np.load(tmp_path / 'o2' / 'features.npz')
  assert saved['top_names'].shape == (3, 5) and not os.path.exists(tmp_path / 'o2' / 'ranked.png')
  other = str(tmp_path / 'other.npz')
  Gallery.build(stored.features, stored.names, stored.cameras, 'another-model').save(other)
  capsys.readouterr()
  for args, expected in (
      ([f'--gallery={other}'], "against a gallery encoded by 'another-model'"),
      ([f'--gallery={kept}', '--rerank'], '--rerank needs the gallery\'s frames'),
      ([f'--gallery={tmp_path / "g"}', '--index=ivf'], '--index=ivf searches an encoded'),
      ([f'--gallery={kept}', '--index=hnsw'], '--index=hnsw: choose one of exact, ivf, pq')):
    assert search.main(['search', f'--workdir={exported_run}', f'--query={tmp_path / "q"}',
                        '--checkpoint=latest', *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err



def test_a_resumed_run_logs_one_value_per_step(tmp_path, cli_data_dir):
  from tensorboard.backend.event_processing import event_accumulator
  workdir = str(tmp_path / 'run')
  c = tiny_config(cli_data_dir, steps=4)
  c.train.log_every, c.train.checkpoint_every, c.train.eval_every = 1, 2, 0
  trainer.train_and_log(c, workdir)
  # A crash after step 4 was logged but before its checkpoint: remove checkpoint 4
  # and leave a line the crash cut short.
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '4'))
  with open(os.path.join(workdir, 'metrics.jsonl'), 'a') as f:
    f.write('{"step": 4, "loss/to')
  trainer.train_and_log(c, workdir)  # resumes from step 2, redoes 3 and 4
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  assert [r['step'] for r in rows] == [1, 2, 3, 4]
  # TensorBoard's scalars, as a script reads them (docs/training.md): the same values.
  events = event_accumulator.EventAccumulator(os.path.join(workdir, 'tensorboard'))
  events.Reload()
  scalars = events.Scalars('loss/total')
  assert [e.step for e in scalars] == [1, 2, 3, 4]
  np.testing.assert_allclose([e.value for e in scalars], [r['loss/total'] for r in rows],
                             rtol=1e-6)


def _damage(workdir, step, how, kind='checkpoints'):
  folder = os.path.join(workdir, kind, str(step))
  files = sorted(os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs)
  data = max(files, key=os.path.getsize)  # the largest array file
  if how == 'flip':
    with open(data, 'r+b') as f:
      f.seek(os.path.getsize(data) // 2)
      chunk = bytearray(f.read(50))
      f.seek(os.path.getsize(data) // 2)
      f.write(bytes(b ^ 0xFF for b in chunk))
  elif how == 'truncate':
    with open(data, 'r+b') as f:
      f.truncate(os.path.getsize(data) // 3)
  elif how == 'metadata':
    os.remove(next(p for p in files if os.path.basename(p) == '_METADATA'))
  elif how == 'empty':
    shutil.rmtree(folder)
    os.makedirs(folder)


@pytest.mark.xdist_group('four_step_run')
@pytest.mark.parametrize('how', ['flip', 'truncate', 'metadata', 'empty'])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, cli_data_dir,
                                                                     four_step_run, how, capsys):
  import jax
  from i2v_jax import checkpoint, train_step
  workdir = copy_of(four_step_run, tmp_path)
  c = four_step_config(cli_data_dir)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints_sha256'))) == ['2.json', '4.json']
  _damage(workdir, 4, how)
  ckpt = checkpoint.Checkpoints(RunFolder(workdir), 3)
  target = train_step.initial_state(c, 12, train_step.make_mesh(jax.devices()[:1]))
  state, step = ckpt.restore(target)
  ckpt.close()
  out = capsys.readouterr().out
  assert step == 2 and 'skipping checkpoint 4' in out  # said which, and why
  assert ('sha256 mismatch' in out) if how == 'flip' else True
  assert int(state.step) == 2
  kept = os.listdir(os.path.join(workdir, 'checkpoints_damaged'))  # moved, not deleted
  assert len([k for k in kept if k.startswith('4-') and not k.endswith('.json')]) == 1
  # Training resumes from step 2 and saves step 4 again.
  trainer.train_and_log(c, workdir)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints')), key=int)[-1] == '4'


def _listing(workdir):
  return sorted(os.path.relpath(os.path.join(r, f), workdir) for r, _, fs in os.walk(workdir)
                for f in fs if 'checkpoints' in r)


@pytest.mark.xdist_group('exported_run')  # the same worker: one run
def test_a_checkpoint_that_does_not_fit_is_refused_and_nothing_moves(tmp_path, cli_data_dir,
                                                                     synthetic_data, exported_run):
  """Faults A: an edited model width is a one-line mismatch, resuming on another
  build is refused by the run's dataset.json; no good checkpoint is ever
  quarantined. Evaluating on another dataset is allowed (cross-domain, below)."""
  import dataclasses
  from tests.conftest import CLI_DATA
  from i2v_jax import checkpoint, config_lib, records
  workdir = copy_of(exported_run, tmp_path)  # 2 steps, evaluated at 2: latest and best
  before = _listing(workdir)
  other = synthetic_data(dataclasses.replace(CLI_DATA, num_train_ids=10))
  again = tiny_config(other, steps=4)
  with pytest.raises(records.DatasetError, match=r'resuming the run in .*: it trained on '
                                                 r"'synthetic' in .* \(.*dataset.json\) but "
                                                 'data.dir holds another build'):
    trainer.train_and_log(again, workdir)
  # An edited model width in config.json: resume refuses in one line.
  saved = json.load(open(config_lib.saved_path(workdir)))
  saved['model']['width'] = 8
  json.dump(saved, open(config_lib.saved_path(workdir), 'w'))
  wide = tiny_config(cli_data_dir, steps=4)
  wide.model.width = 8
  with pytest.raises(checkpoint.CheckpointMismatch, match='model config'):
    trainer.train_and_log(wide, workdir)
  assert _listing(workdir) == before
  assert not os.path.exists(os.path.join(workdir, 'checkpoints_damaged'))


@pytest.mark.xdist_group('exported_run')
@pytest.mark.parametrize('how', ['flip', 'no_record', 'torn_record', 'metadata', 'empty'])
def test_every_reader_verifies_the_checkpoint(tmp_path, cli_data_dir, exported_run, how):
  """Faults B: i2v_jax.load, export and evaluate mode refuse a damaged or
  unrecorded checkpoint (one line), and move nothing."""
  import i2v_jax
  from i2v_jax import checkpoint
  from i2v_jax.models import export
  workdir = copy_of(exported_run, tmp_path)  # 2 steps, evaluated at 2: latest and best
  c = tiny_config(cli_data_dir, steps=2)
  for kind in ('checkpoints', 'checkpoints_best'):
    record = checkpoint.manifest_path(os.path.join(workdir, kind), 2)
    if how == 'no_record':
      os.remove(record)
    elif how == 'torn_record':
      with open(record, 'r+') as f:
        f.truncate(20)
    else:
      _damage(workdir, 2, how, kind)
  before = _listing(workdir)
  why = {'flip': 'sha256 mismatch', 'no_record': 'no sha256 record',
         'torn_record': 'unreadable sha256 record', 'metadata': 'missing',
         'empty': 'missing'}[how]
  for which in ('best', 'latest'):
    with pytest.raises(checkpoint.DamagedCheckpoint, match=why):
      i2v_jax.load(workdir, checkpoint=which)
    assert export.main(['export', f'--workdir={workdir}', f'--checkpoint={which}',
                        f'--out={tmp_path}/b.npz']) == 2
    c.mode, c.eval.checkpoint = 'evaluate', which
    with pytest.raises(checkpoint.DamagedCheckpoint, match=why):
      trainer.evaluate_checkpoint(c, workdir)
  assert _listing(workdir) == before and not os.path.exists(f'{tmp_path}/b.npz')


def test_one_writer_per_workdir_dataset_and_evaluation(tmp_path, cli_data_dir):
  """Faults 2: a second training, evaluation or build on a folder in use is one
  line naming the other process; nothing is written. The lock is the kernel's
  (flock): a holder that died leaves nothing held."""
  import os as os_
  from data_prep import build, synthetic
  from i2v_jax import locks
  workdir = str(tmp_path / 'run')
  os_.makedirs(workdir)
  c = tiny_config(cli_data_dir, steps=2)
  with locks.hold(os_.path.join(workdir, 'lock'), 'the run'):
    with pytest.raises(locks.Locked, match=rf'--workdir={workdir} is in use by pid '
                                           rf'{os_.getpid()} on .*, since'):
      trainer.train_and_log(c, workdir)
  assert os_.listdir(workdir) == ['lock']
  c.mode = 'evaluate'
  os_.makedirs(os_.path.join(workdir, 'checkpoints', '2'))  # a run to evaluate (checked first)
  with locks.hold(os_.path.join(workdir, 'eval', 'lock'), 'the evaluation'):
    with pytest.raises(locks.Locked, match='evaluation into'):
      trainer.evaluate_checkpoint(c, workdir)
  out = str(tmp_path / 'data')
  with locks.hold(out + '.lock', 'the build'):
    with pytest.raises(locks.Locked, match=f'--out_dir={out} is in use'):
      build.build('synthetic', out, spec=synthetic.SyntheticSpec(num_train_ids=2,
                                                                  num_test_ids=1))
  assert not os_.path.exists(out) and not os_.path.exists(out + '.staging')


def test_a_finished_run_started_again_keeps_one_value_per_step(tmp_path, cli_data_dir, capsys):
  """Faults 4: a run that crashed after its final checkpoint (or is simply run
  again) is evaluated again, and its final step's values are replaced, not doubled
  (metrics.jsonl and TensorBoard)."""
  from tensorboard.backend.event_processing import event_accumulator
  workdir = str(tmp_path / 'run')
  c = tiny_config(cli_data_dir, steps=2)
  c.train.log_every, c.train.eval_every = 1, 2
  trainer.train_and_log(c, workdir)
  trainer.train_and_log(c, workdir)
  assert 'is finished (step 2 of 2): nothing to train' in capsys.readouterr().out
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  kinds = [(r['step'], 'loss/total' in r) for r in rows]
  assert sorted(kinds) == [(1, True), (2, False), (2, True)]
  events = event_accumulator.EventAccumulator(os.path.join(workdir, 'tensorboard'))
  events.Reload()
  assert [e.step for e in events.Scalars('loss/total')] == [1, 2]
  assert [e.step for e in events.Scalars('i2v/mAP')] == [2]


@pytest.mark.xdist_group('exported_run')
def test_a_run_evaluates_on_another_dataset_with_its_own_classifier(tmp_path, synthetic_data,
                                                                    exported_run):
  """Cross-domain evaluation (as torchreid's and fast-reid's): a run trained on one
  synthetic pool (12 classes) evaluates on another with 10 training ids and other
  test identities; its networks are the run's, never sized from the evaluated set."""
  import dataclasses
  from tests.conftest import CLI_DATA
  other = synthetic_data(dataclasses.replace(CLI_DATA, num_train_ids=10, id_offset=500, seed=3))
  e = tiny_config(other, steps=2)
  e.mode, e.eval.from_workdir = 'evaluate', exported_run
  for which in ('latest', 'best'):
    e.eval.checkpoint = which
    out = str(tmp_path / which)
    results = trainer.evaluate_checkpoint(e, out)
    assert 0 < results.ranking['i2v']['mAP'] <= 1
    index = [json.loads(line) for line in open(os.path.join(out, 'eval', 'index.jsonl'))]
    assert [(i['checkpoint'], i['data_dir']) for i in index] == [(which, os.path.abspath(other))]
    assert os.path.isfile(os.path.join(out, index[0]['dir'], 'results.json'))
  with pytest.raises(UserError, match='already holds an evaluation of step 2'):
    trainer.evaluate_checkpoint(e, str(tmp_path / 'best'))  # the same folder: never overwritten


def test_a_vkd_student_evaluates_and_resumes_without_its_teachers_folder(tmp_path, cli_data_dir):
  """The student's checkpoint holds the frozen teacher: once trained, the teacher
  run's folder is not read again (deleting it breaks neither evaluation nor resume)."""
  def config(preset, steps):
    c = tiny_config(cli_data_dir, steps=steps)
    c.unlock()
    c.preset = preset
    fresh = base.get_config(f'preset={preset},runlocal')
    for key in ('networks', 'teacher', 'loss', 'input.sampling', 'input.student_frames',
                'model.nonlocal_blocks'):
      *path, leaf = key.split('.')
      node, src = c, fresh
      for part in path:
        node, src = node[part], src[part]
      node[leaf] = src[leaf]
    c.lock()
    return c
  teacher_dir, student_dir = str(tmp_path / 'teacher'), str(tmp_path / 'student')
  trainer.train_and_log(config('vkd_teacher', 2), teacher_dir)
  student = config('vkd', 2)
  student.teacher.checkpoint = teacher_dir
  trained = trainer.train_and_log(student, student_dir)
  shutil.rmtree(teacher_dir)
  evaluate = config('vkd', 2)
  evaluate.teacher.checkpoint = teacher_dir
  evaluate.mode = 'evaluate'
  results = trainer.evaluate_checkpoint(evaluate, student_dir)
  assert results.ranking['i2v']['mAP'] == pytest.approx(trained['i2v/mAP'] / 100, abs=1e-6)
  longer = config('vkd', 4)
  longer.teacher.checkpoint = teacher_dir
  trainer.train_and_log(longer, student_dir)
  assert os.path.isdir(os.path.join(RunFolder(student_dir).checkpoints, '4'))


def test_a_checkpoint_found_without_its_record_is_never_sealed(tmp_path, cli_data_dir, capsys):
  """Faults, third trial: a checkpoint without a sha256 record (a run killed between
  a save and its record) is resumed with a warning, but never given a record later,
  so every other reader still refuses it; the steps saved after it are recorded."""
  from i2v_jax import checkpoint
  workdir = str(tmp_path / 'run')
  c = tiny_config(cli_data_dir, steps=2)
  c.train.keep_checkpoints, c.train.eval_every = 5, 0
  trainer.train_and_log(c, workdir)
  run = RunFolder(workdir)
  os.remove(checkpoint.manifest_path(run.checkpoints, 2))
  longer = tiny_config(cli_data_dir, steps=3)
  longer.train.keep_checkpoints, longer.train.eval_every, longer.train.checkpoint_every = 5, 0, 1
  trainer.train_and_log(longer, workdir)
  assert 'has no sha256 record: restoring it unverified' in capsys.readouterr().out
  assert not os.path.exists(checkpoint.manifest_path(run.checkpoints, 2))
  assert checkpoint.verify(run.checkpoints, 3, require=True) is None
  with pytest.raises(checkpoint.DamagedCheckpoint, match='no sha256 record'):
    checkpoint.load_network(workdir, 'student', '2')


@pytest.mark.xdist_group('exported_run')
def test_a_query_that_is_not_an_image_and_a_bad_checkpoint_name_are_one_line(tmp_path, capsys,
                                                                            exported_run):
  """Faults trial: a search query that is not an image, and export with a bad
  --checkpoint, were tracebacks."""
  from i2v_jax import search
  from i2v_jax.models import export
  (tmp_path / 'q').mkdir()
  (tmp_path / 'q' / 'notes.jpg').write_text('not a picture')
  (tmp_path / 'g').mkdir()
  (tmp_path / 'g' / 'g.png').write_bytes((tmp_path / 'q' / 'notes.jpg').read_bytes())
  assert search.main(['search', f'--workdir={exported_run}', f'--query={tmp_path / "q"}',
                      f'--gallery={tmp_path / "g"}', '--checkpoint=latest']) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'notes.jpg: not a readable image' in err[0], err
  out = tmp_path / 'backbone.npz'
  assert export.main(['export', f'--workdir={exported_run}', '--checkpoint=bets', f'--out={out}']) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == ["error: checkpoint 'bets': choose latest, best or a step number"], err
  assert not out.exists()


def test_the_log_line_labels_the_input_wait_as_a_share_of_the_step():
  line = trainer.log_line(7, {'loss/total': 1.5, 'loss/id/student': 1.0, 'lr': 3e-4,
                              'images_per_s': 120.0, 'data_wait_s': 0.05,
                              'data_wait_fraction': 0.25})
  assert line == ('step 7: loss 1.5000 weighted (terms unweighted: id/student=1.0000) '
                  'lr 3.00e-04 120 img/s, '
                  'data wait 0.050 s/step (25% of the time)')
