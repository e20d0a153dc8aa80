"""Converters and protocols against the real MARS / Duke metadata in ../shared/data."""

import dataclasses
import hashlib
import io
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
import tensorflow as tf
from PIL import Image

from configs import base
from data_prep import build, duke, mars, objects, synthetic, veri, writer
from data_prep.writer import DataError
from i2v_jax import input_pipeline, records
from i2v_jax.datasets import DATASETS
from i2v_jax.dataset_folder import Dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data')
MARS_INFO = os.path.join(SHARED, 'mars_info')
DUKE_INFO = os.path.join(SHARED, 'dukemtmc_videoreid_info')
needs_shared = pytest.mark.skipif(not os.path.isdir(SHARED),
                                  reason='../shared/data not checked out beside the repo')


def jpeg(seed=0, size=(16, 8)):
  rng = np.random.default_rng(seed)
  buf = io.BytesIO()
  Image.fromarray(rng.integers(0, 255, size + (3,), np.uint8)).save(buf, 'JPEG')
  return buf.getvalue()


def mars_meta():
  load = lambda f, k: scipy.io.loadmat(os.path.join(MARS_INFO, f))[k].astype(np.int64)
  names = lambda f: [l.split()[0].split('/')[1] for l in open(os.path.join(MARS_INFO, f))]
  return (load('tracks_train_info.mat', 'track_train_info'),
          load('tracks_test_info.mat', 'track_test_info'),
          load('query_IDX.mat', 'query_IDX'),
          names('list_train_seq.txt'), names('list_test_seq.txt'))


def duke_meta():
  rows = [l.split() for l in open(os.path.join(DUKE_INFO, 'list_duke_query_gallery.txt'))]
  info = np.loadtxt(os.path.join(DUKE_INFO, 'info_test.txt'), dtype=np.int64)
  return [(r[0], int(i[1] - i[0] + 1), int(i[2]), int(i[3])) for r, i in zip(rows, info)]


# ------------------------------------------------------------ full protocols


@needs_shared
def test_mars_protocol_counts_from_real_metadata():
  train, test, query, _, _ = mars_meta()
  rows = mars.protocol_rows(train, test, query)
  assert len(rows['train']) == 8298
  assert len(np.unique(train[rows['train'], 2])) == 625
  assert len(rows['query']) == 1980
  assert len(rows['gallery']) == 11310
  assert set(rows['query']) <= set(rows['gallery'])  # queries are in the gallery
  assert not np.isin(test[rows['query'], 2], [0, -1]).any()
  assert (test[rows['gallery'], 2] == 0).sum() == 3248  # distractors kept


@needs_shared
def test_duke_protocol_counts_from_real_metadata():
  rows = duke_meta()
  query = [r for r in rows if r[0].startswith('query/')]
  gallery = [r for r in rows if r[0].startswith('gallery/')]
  assert len(query) == 702 and len(gallery) == 2636
  gallery_keys = {(g[0].split('/', 1)[1], g[2], g[3]) for g in gallery}
  assert all((q[0].split('/', 1)[1], q[2], q[3]) in gallery_keys for q in query)


# --------------------------------------- fake image trees from real rows


def make_mars_tree(root, picks=((0, 3, 8297), (4129, 4137, 12179, 100, 11000))):
  """Real rows (names, pids, cams, lengths) re-indexed into mini info files."""
  train, test, query, train_names, test_names = mars_meta()
  os.makedirs(os.path.join(root, 'info'))
  expected = {}
  for split, info, names, rows, key in (
      ('train', train, train_names, picks[0], 'track_train_info'),
      ('test', test, test_names, picks[1], 'track_test_info')):
    mini, frame_list, start = [], [], 1
    for r in rows:
      s, e, pid, cam = info[r]
      frames = [f'{names[r]}F{i:03d}.jpg' for i in range(1, e - s + 2)]
      for f in frames:
        d = os.path.join(root, f'bbox_{split}', f[:4])
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f), 'wb') as fh:
          fh.write(jpeg(len(frame_list)))
        frame_list.append(f)
      mini.append([start, start + len(frames) - 1, pid, cam])
      start += len(frames)
      expected[(split, names[r])] = (int(pid), int(cam), len(frames))
    scipy.io.savemat(os.path.join(root, 'info', f'tracks_{split}_info.mat'),
                     {key: np.array(mini, np.int32)})
    with open(os.path.join(root, 'info', f'{split}_name.txt'), 'w') as fh:
      fh.write('\n'.join(frame_list) + '\n')
  # Queries: the first two test picks (real query rows 4130, 4138).
  assert list(query[0, :2]) == [picks[1][0] + 1, picks[1][1] + 1]
  scipy.io.savemat(os.path.join(root, 'info', 'query_IDX.mat'),
                   {'query_IDX': np.array([[1, 2]], np.uint16)})
  return expected


@needs_shared
def test_mars_converter_reproduces_real_rows(tmp_path):
  expected = make_mars_tree(str(tmp_path / 'raw'))
  meta = build.build('mars', str(tmp_path / 'out'), str(tmp_path / 'raw'),
                     workers=2, show_progress=False)
  got = {}
  for split in ('train', 'query', 'gallery'):
    for row in records.load_index(str(tmp_path / 'out'), split):
      got[(split, row['name'])] = (row['pid'], row['camid'], row['num_frames'])
  for (split, name), value in expected.items():
    if split == 'train':
      assert got[('train', name)] == value
    elif value[0] != -1:
      assert got[('gallery', name)] == value
  # 5 test picks, one of them pid -1 (row 100 of the test list) is not in the gallery.
  assert meta['splits']['train']['tracklets'] == 3
  assert meta['splits']['query']['tracklets'] == 2
  n_junk = sum(1 for (s, _), v in expected.items() if s == 'test' and v[0] == -1)
  assert meta['splits']['gallery']['tracklets'] == 5 - n_junk
  assert set(meta['source_hashes']) == set(mars.INFO_FILES)
  # Frames are stored in order and intact.
  row = records.load_index(str(tmp_path / 'out'), 'train')[2]
  ex = records.parse(records.read_record(str(tmp_path / 'out' / row['shard']), row['offset']))
  assert ex['name'] == row['name'] and len(ex['frames']) == row['num_frames'] == 50
  first = tmp_path / 'raw' / 'bbox_train' / row['name'][:4] / f"{row['name']}F001.jpg"
  last = first.with_name(f"{row['name']}F050.jpg")
  assert ex['frames'][0] == first.read_bytes() and ex['frames'][-1] == last.read_bytes()


def make_duke_tree(root, picks=(0, 1, 702, 703, 2000), old_format=False):
  rows = duke_meta()
  expected = {}
  for idx in picks:
    name, length, pid, cam = rows[idx]
    split, pid_dir, trk = name.split('/')
    d = os.path.join(root, split, pid_dir, trk)
    os.makedirs(d)
    length = min(length, 12)
    for i in range(1, length + 1):  # skip index 3: missing indices are skipped
      if i == 3 and length > 3:
        continue
      fname = (f'{pid:04d}C{cam}F{i:04d}X{1000 + i}.jpg' if old_format else
               f'{pid:04d}_C{cam}_F{i:04d}_X{1000 + i}.jpg')
      with open(os.path.join(d, fname), 'wb') as fh:
        fh.write(jpeg(i))
    expected[name] = (pid, cam, length - (1 if length > 3 else 0))
  os.makedirs(os.path.join(root, 'train', '0001', '0001'))
  with open(os.path.join(root, 'train', '0001', '0001', '0001_C1_F0001_X0001.jpg'), 'wb') as fh:
    fh.write(jpeg(0))
  return expected


@needs_shared
@pytest.mark.parametrize('old_format', [False, True])
def test_duke_converter_reproduces_real_rows(tmp_path, old_format):
  expected = make_duke_tree(str(tmp_path / 'raw'), old_format=old_format)
  splits, _, _ = duke.convert(str(tmp_path / 'raw'))
  got = {t.name: (t.pid, t.camid, len(t.frames)) for s in ('query', 'gallery')
         for t in splits[s]}
  assert got == expected
  t = splits['query'][0]
  indices = [int(os.path.basename(f).replace('_', '')[7:11]) for f in t.frames]
  assert indices == sorted(indices) and 3 not in indices


# ------------------------------------------------------------- VeRi layout


def make_veri_tree(root):
  for d in ('image_train', 'image_query', 'image_test'):
    os.makedirs(os.path.join(root, d))
  train = ['0001_c001_00016450_0.jpg', '0001_c001_00016455_1.jpg',
           '0001_c002_00020000_0.jpg', '0003_c001_00000001_0.jpg']
  query = ['0002_c002_00030600_1.jpg']
  tracks = ['0002_c002_00030600_1.jpg 0002_c002_00030600_1.jpg 0002_c002_00030605_1.jpg',
            '0002_c003_00031600_1.jpg 0002_c003_00031600_1.jpg']
  for d, names in (('image_train', train), ('image_query', query),
                   ('image_test', ['0002_c002_00030600_1.jpg', '0002_c002_00030605_1.jpg',
                                   '0002_c003_00031600_1.jpg'])):
    for i, n in enumerate(names):
      with open(os.path.join(root, d, n), 'wb') as fh:
        fh.write(jpeg(i))
  for f, lines in (('name_train.txt', train), ('name_query.txt', query),
                   ('test_track.txt', tracks)):
    with open(os.path.join(root, f), 'w') as fh:
      fh.write('\n'.join(lines) + '\n')


def test_veri_converter_groups_train_and_reads_tracks(tmp_path):
  make_veri_tree(str(tmp_path))
  splits, protocol, sources = veri.convert(str(tmp_path))
  assert [(t.name, t.pid, t.camid, len(t.frames), t.label) for t in splits['train']] == [
      ('0001_c001', 1, 1, 2, 0), ('0001_c002', 1, 2, 1, 0), ('0003_c001', 3, 1, 1, 1)]
  assert [(t.pid, t.camid, len(t.frames)) for t in splits['query']] == [(2, 2, 1)]
  assert [(t.pid, t.camid, len(t.frames)) for t in splits['gallery']] == [(2, 2, 2), (2, 3, 1)]
  assert 'v2v_query' in protocol and len(sources) == 3


# ---------------------------------------------------------------- bad input


def test_missing_folder_and_file_are_named(tmp_path):
  with pytest.raises(DataError, match=r'bbox_train: folder missing'):
    mars.convert(str(tmp_path))
  (tmp_path / 'train').mkdir()
  with pytest.raises(DataError, match=r'query: folder missing'):
    duke.convert(str(tmp_path))
  with pytest.raises(DataError, match='image_train: folder missing'):
    veri.convert(str(tmp_path))


@needs_shared
def test_mars_missing_info_file(tmp_path):
  make_mars_tree(str(tmp_path))
  os.remove(tmp_path / 'info' / 'query_IDX.mat')
  with pytest.raises(DataError, match=r'query_IDX.mat: missing MARS metadata'):
    mars.convert(str(tmp_path))


@needs_shared
@pytest.mark.parametrize('damage', ['truncated', 'random', 'empty', 'empty_query'])
def test_damaged_mars_mat_file_is_named(tmp_path, damage):
  make_mars_tree(str(tmp_path))
  name = 'query_IDX.mat' if damage == 'empty_query' else 'tracks_test_info.mat'
  path = tmp_path / 'info' / name
  if damage == 'truncated':
    path.write_bytes(path.read_bytes()[:150])
  elif damage == 'random':
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 400, np.uint8).tobytes())
  elif damage == 'empty':
    path.write_bytes(b'')
  else:
    scipy.io.savemat(str(path), {'query_IDX': np.zeros((1, 0))})
  with pytest.raises(DataError) as e:
    mars.convert(str(tmp_path))
  message = str(e.value)
  assert message.startswith(str(path)) and '\n' not in message
  assert ('empty' if damage == 'empty_query' else 'MARS') in message


@needs_shared
def test_stray_file_in_a_duke_identity_folder_is_skipped_with_a_note(tmp_path, capsys):
  make_duke_tree(str(tmp_path / 'duke'))
  clean, _, _ = duke.convert(str(tmp_path / 'duke'))
  identity = next((tmp_path / 'duke' / 'train').iterdir())
  (identity / '.DS_Store').write_bytes(b'\0\0')
  splits, _, _ = duke.convert(str(tmp_path / 'duke'))
  assert '.DS_Store: not a tracklet folder' in capsys.readouterr().err
  assert splits == clean


def test_damaged_metadata_and_label_mismatch_are_named(tmp_path):
  out = tmp_path / 'syn'
  build.build('synthetic', str(out), spec=TINY, show_progress=False)
  meta = json.loads((out / 'metadata.json').read_text())
  meta['num_classes'] += 1
  (out / 'metadata.json').write_text(json.dumps(meta))
  with pytest.raises(records.DatasetError, match=r'num_classes=7 must be a positive integer '
                                                 r'equal to the number of training ids in '
                                                 r'id_map \(6\)'):
    records.load_metadata(str(out))
  meta['id_map']['999'] = 6  # metadata agrees with itself, not with the index
  (out / 'metadata.json').write_text(json.dumps(meta))
  with pytest.raises(records.DatasetError, match='num_classes=7 but the train index has 6'):
    Dataset.open(str(out))
  (out / 'metadata.json').write_text(json.dumps(meta)[:50])  # truncated
  with pytest.raises(records.DatasetError, match='metadata.json: not valid JSON'):
    records.load_metadata(str(out))


@needs_shared
def test_absent_frame_leaves_no_output(tmp_path):
  make_mars_tree(str(tmp_path / 'raw'))
  victim = sorted(os.listdir(tmp_path / 'raw' / 'bbox_test' / '0002'))[0]
  os.remove(tmp_path / 'raw' / 'bbox_test' / '0002' / victim)
  with pytest.raises(DataError, match=f'{victim}: frame listed .* missing'):
    build.build('mars', str(tmp_path / 'out'), str(tmp_path / 'raw'),
                workers=1, show_progress=False)
  assert not os.path.exists(tmp_path / 'out')  # out_dir appears only when complete
  left = os.listdir(tmp_path / 'out.staging')  # the train split's shard is finished
  assert 'metadata.json' not in left and not any('.tmp' in f for f in left)


def damage_jpeg(data: bytes, how: str) -> bytes:
  """A frame as a careless copy or a full disk leaves it."""
  return {'header_only': data[:40], 'no_end_marker': data[:-2],
          'half': data[:len(data) // 2],
          'zero_padded': data[:len(data) // 2] + bytes(len(data) - len(data) // 2),
          'magic_then_garbage': data[:3] + np.random.default_rng(0).bytes(len(data))}[how]


DAMAGES = ['header_only', 'no_end_marker', 'half', 'zero_padded', 'magic_then_garbage']


@pytest.mark.parametrize('how', DAMAGES)
def test_damaged_frame_is_refused_by_name(tmp_path, how):
  """Each damage is refused, as the pipeline's decoder refuses it (PIL alone lets
  the zero-padded file through; training would then fail on it)."""
  path = tmp_path / 'f.jpg'
  path.write_bytes(damage_jpeg(jpeg(0), how))
  with pytest.raises(tf.errors.InvalidArgumentError):
    tf.io.decode_jpeg(path.read_bytes(), channels=3)
  with pytest.raises(DataError, match=r'f.jpg: not a whole JPEG \(.*truncated or corrupt\); '
                                       'replace the file'):
    writer.read_frame(str(path), verify=True)
  path.write_bytes(jpeg(0))
  assert writer.read_frame(str(path), verify=True) == jpeg(0)


@needs_shared
@pytest.mark.parametrize('dataset', ['mars', 'duke', 'veri'])
def test_damaged_frame_stops_each_build_and_staging_fate_is_said(tmp_path, dataset):
  raw = tmp_path / 'raw'
  if dataset == 'mars':
    make_mars_tree(str(raw))
    victim = raw / 'bbox_train' / '0001' / '0001C1T0001F002.jpg'
  elif dataset == 'duke':
    make_duke_tree(str(raw))
    victim = sorted((raw / 'gallery').rglob('*.jpg'))[0]
  else:
    make_veri_tree(str(raw))
    victim = raw / 'image_test' / '0002_c003_00031600_1.jpg'
  victim.write_bytes(damage_jpeg(victim.read_bytes(), 'zero_padded'))
  with pytest.raises(DataError) as e:
    build.build(dataset, str(tmp_path / 'out'), str(raw), workers=1, show_progress=False)
  message = str(e.value)
  assert '\n' not in message and f'{victim.name}: not a whole JPEG' in message
  assert not os.path.exists(tmp_path / 'out')  # nothing there until a build completes
  staging = tmp_path / 'out.staging'
  shards = [n for n in os.listdir(staging) if '.tfrecord-' in n] if staging.exists() else []
  if shards:  # kept, and the error says so; the rerun reuses them
    assert f'{len(shards)} finished shards are kept in {staging}' in message
  else:
    assert message.endswith('(nothing was kept)') and not staging.exists()


@needs_shared
def test_pid_or_camera_disagreeing_with_metadata(tmp_path):
  make_mars_tree(str(tmp_path))
  names = (tmp_path / 'info' / 'train_name.txt').read_text().replace(
      '0001C1T0001F003', '0001C2T0001F003')
  (tmp_path / 'info' / 'train_name.txt').write_text(names)
  with pytest.raises(DataError, match=r'0001C2T0001F003.jpg.*pid 1, camera 1'):
    mars.convert(str(tmp_path))
  make_duke_tree(str(tmp_path / 'duke'), picks=(0,))
  d = tmp_path / 'duke' / 'query' / '0005' / '2200'
  f = sorted(os.listdir(d))[0]
  os.rename(d / f, d / ('0006' + f[4:]))
  with pytest.raises(DataError, match='pid 0006 in the file name disagrees'):
    duke.convert(str(tmp_path / 'duke'))


# ----------------------------------------------- atomic, resumable builds


def sha256s(folder):
  return {f: hashlib.sha256((folder / f).read_bytes()).hexdigest()
          for f in os.listdir(folder) if '.tfrecord-' in f}


TINY = synthetic.SyntheticSpec(num_train_ids=6, num_test_ids=4, min_frames=3,
                               max_frames=5, height=32, width=16)


def test_interrupted_build_resumes_and_reruns_are_idempotent(tmp_path, monkeypatch):
  spec = TINY
  out = str(tmp_path / 'syn')
  staging = tmp_path / 'syn.staging'
  from data_prep import writer
  real = writer._write_shard
  calls = []

  def flaky(path, tracklets, verify, progress):
    calls.append(os.path.basename(path))
    if os.path.basename(path).startswith('synthetic-gallery'):
      open(path + '.tmp-999', 'w').close()  # what a killed writer leaves behind
      raise KeyboardInterrupt  # killed mid-build
    return real(path, tracklets, verify, progress)

  monkeypatch.setattr(writer, '_write_shard', flaky)
  with pytest.raises(KeyboardInterrupt):
    build.build('synthetic', out, spec=spec, show_progress=False)
  assert not os.path.exists(out)  # the build is staged; out_dir appears only when complete
  with pytest.raises(records.DatasetError, match='not a complete dataset build'):
    records.load_metadata(out)
  monkeypatch.setattr(writer, '_write_shard', real)
  before = {f: os.path.getmtime(staging / f) for f in os.listdir(staging)
            if f.startswith('synthetic-train.tfrecord-')}
  meta = build.build('synthetic', out, spec=spec, show_progress=False)
  after = {f: os.path.getmtime(os.path.join(out, f)) for f in before}
  assert before == after  # finished shards were kept, not rewritten
  assert not staging.exists() and not [f for f in os.listdir(out) if '.tmp-' in f]
  assert meta['splits']['train']['tracklets'] == 6 * 3
  assert records.load_metadata(out)['splits'] == meta['splits']
  # An uninterrupted build in another process (other hash seed) gives the same bytes.
  again = tmp_path / 'again'
  subprocess.run([sys.executable, '-m', 'data_prep.build', '--dataset', 'synthetic',
                  '--out_dir', str(again), '--workers', '1'] +
                 [f'--synthetic_{k}={v}' for k, v in dataclasses.asdict(spec).items()],
                 cwd=REPO, env=dict(os.environ, PYTHONHASHSEED='123', PYTHONPATH=REPO),
                 check=True, capture_output=True)
  assert sha256s(again) == sha256s(tmp_path / 'syn') and len(sha256s(again)) == 3
  assert records.load_metadata(str(again))['splits'] == meta['splits']


def test_a_build_never_damages_the_dataset_already_there(tmp_path, monkeypatch):
  out = tmp_path / 'syn'
  build.build('synthetic', str(out), spec=TINY, show_progress=False)
  original = sha256s(out) | {'metadata.json': hashlib.sha256(
      (out / 'metadata.json').read_bytes()).hexdigest()}
  # The same build again: nothing to do, nothing rewritten.
  build.build('synthetic', str(out), spec=TINY, show_progress=False)
  other = dataclasses.replace(TINY, seed=1)
  with pytest.raises(DataError, match='another finished dataset.*--overwrite'):
    build.build('synthetic', str(out), spec=other, show_progress=False)
  # --overwrite with a build that fails half-way: the old dataset is untouched.
  from data_prep import writer

  def broken(path, tracklets, verify, progress):
    raise DataError(f'{path}: disk full')

  monkeypatch.setattr(writer, '_write_shard', broken)
  with pytest.raises(DataError, match='disk full'):
    build.build('synthetic', str(out), spec=other, show_progress=False, overwrite=True)
  assert sha256s(out) | {'metadata.json': hashlib.sha256(
      (out / 'metadata.json').read_bytes()).hexdigest()} == original
  monkeypatch.undo()
  meta = build.build('synthetic', str(out), spec=other, show_progress=False, overwrite=True)
  assert meta['protocol']['spec']['seed'] == 1 and sha256s(out) != original


def test_bad_out_dir_and_counts_are_one_line_errors(tmp_path):
  (tmp_path / 'a_file').write_text('x')
  run = lambda *args: subprocess.run(
      [sys.executable, '-m', 'data_prep.build', '--dataset', 'synthetic', *args],
      cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True)
  for args, named in [(['--out_dir', str(tmp_path / 'a_file')], 'is a file'),
                      (['--out_dir', str(tmp_path / 'x'), '--max_tracklets', '-1'],
                       '--max_tracklets -1')]:
    result = run(*args)
    assert result.returncode == 2, result.stderr[-500:]
    assert named in result.stderr.strip().splitlines()[-1]
  # A second build of one --out_dir: refused before its conversion, one line.
  busy = str(tmp_path / 'busy')
  with writer.build_lock(busy):
    result = run('--out_dir', busy, '--synthetic_num_train_ids', '400')
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2 and len(lines) == 1, result.stderr[-500:]
  assert lines[0].startswith(f'error: --out_dir={busy} is in use by pid {os.getpid()} on '
                             f'{socket.gethostname()}, since '), lines[0]
  assert not os.path.exists(busy) and not os.path.exists(busy + '.staging')
  (tmp_path / 'stuff').mkdir()
  (tmp_path / 'stuff' / 'notes.txt').write_text('mine')
  with pytest.raises(DataError, match='not a dataset build'):
    build.build('synthetic', str(tmp_path / 'stuff'), spec=TINY, show_progress=False)
  readonly = tmp_path / 'readonly'
  readonly.mkdir()
  os.chmod(readonly, 0o500)
  try:
    if os.access(readonly, os.W_OK):  # root ignores permissions: nothing to test
      return
    with pytest.raises(DataError, match='cannot write'):
      build.build('synthetic', str(readonly / 'syn'), spec=TINY, show_progress=False)
  finally:
    os.chmod(readonly, 0o700)


def test_damaged_shards_are_named_not_read_as_data(tmp_path):
  from i2v_jax import input_pipeline
  from configs import base
  out = tmp_path / 'syn'
  build.build('synthetic', str(out), spec=TINY, show_progress=False)
  rows = records.load_index(str(out), 'gallery')
  shard = out / rows[1]['shard']
  data = bytearray(shard.read_bytes())
  middle = rows[1]['offset'] + 200  # inside record 1's JPEG bytes
  data[middle:middle + 50] = bytes(b ^ 0xFF for b in data[middle:middle + 50])
  shard.write_bytes(bytes(data))
  records.check_shards(str(out), 'gallery', rows)  # headers are intact: the fast check passes
  with pytest.raises(records.DatasetError, match=f'{shard}: the record at byte '
                     f'{rows[1]["offset"]} has corrupt data \\(CRC mismatch\\)'):
    records.read_record(str(shard), rows[1]['offset'])
  c = base.get_config('runlocal')
  with pytest.raises(records.DatasetError, match='corrupt data'):  # raised inside tf.data
    for _ in input_pipeline.numpy_batches(
        input_pipeline.eval_dataset(Dataset.open(str(out)), 'gallery', c, mode='video')):
      pass
  shard.write_bytes(bytes(data[:rows[-1]['offset'] + 20]))  # truncated
  with pytest.raises(records.DatasetError, match='cut short'):
    records.check_shards(str(out), 'gallery', rows)


@needs_shared
def test_a_png_named_jpg_is_refused_even_without_verify(tmp_path):
  """Faults 6: --no_verify skips decoding, not the cheap check of the first bytes."""
  make_mars_tree(str(tmp_path / 'raw'))
  victim = tmp_path / 'raw' / 'bbox_train' / '0001' / '0001C1T0001F002.jpg'
  buf = io.BytesIO()
  Image.new('RGB', (8, 16)).save(buf, format='PNG')
  victim.write_bytes(buf.getvalue())
  with pytest.raises(DataError, match='0001C1T0001F002.jpg: a PNG file, not a JPEG'):
    build.build('mars', str(tmp_path / 'out'), str(tmp_path / 'raw'), workers=1,
                verify=False, show_progress=False)
  assert not os.path.exists(tmp_path / 'out')


# ------------------------------------------------- the datasets table, end to end


@pytest.mark.parametrize('name', sorted(DATASETS))
def test_every_dataset_in_the_table_builds_and_feeds_training_and_its_protocol(tmp_path, name):
  """Each `i2v_jax.datasets.DATASETS` entry, from a tiny raw tree through its
  converter and build: the metadata names it, the config takes its input size,
  the input pipeline gives a P x K batch of clips at that size with labels in
  range, and every query's identity is in the gallery (its protocol can run)."""
  raw, out = str(tmp_path / 'raw'), str(tmp_path / 'out')
  trees = {  # name -> a tiny raw tree maker; synthetic is generated
      'mars': make_mars_tree,
      'duke': lambda root: make_duke_tree(root, picks=(0, 1, 705, 713, 2000)),  # queries' ids in the gallery
      'veri': lambda root: (os.makedirs(root), make_veri_tree(root)),
      'synthetic': None, 'objects': None}
  assert name in trees, f'dataset {name!r}: add a tiny raw tree for it to this test'
  if name in ('mars', 'duke') and not os.path.isdir(SHARED):
    pytest.skip('../shared/data not checked out beside the repo')
  spec = synthetic.SyntheticSpec(num_train_ids=4, num_test_ids=2, min_frames=3, max_frames=5,
                                 height=32, width=16) if name == 'synthetic' else (
                                     objects.SPECS['tiny'] if name == 'objects' else None)
  if trees[name]:
    trees[name](raw)
  meta = build.build(name, out, raw, workers=1, show_progress=False, spec=spec)
  assert meta['dataset'] == name
  c = base.get_config(f'preset=student_only,dataset={name}')
  assert (c.input.height, c.input.width) == (DATASETS[name].height, DATASETS[name].width)
  c.data.dir = out
  c.input.num_ids, c.input.tracklets_per_id = min(2, meta['splits']['train']['ids']), 2
  batch = next(input_pipeline.train_dataset(Dataset.open(out), c, seed=0, num_steps=1).as_numpy_iterator())
  p, k = c.input.num_ids, c.input.tracklets_per_id
  assert batch['clips'].shape == (p * k, c.input.clip_len, c.input.height, c.input.width, 3)
  assert 0 <= batch['labels'].min() and batch['labels'].max() < meta['splits']['train']['ids']
  gallery = {r['pid'] for r in records.load_index(out, 'gallery')}
  assert all(r['pid'] in gallery for r in records.load_index(out, 'query'))
  assert ('v2v_query' in meta['protocol']) == (name == 'veri')  # image-only queries


@needs_shared
def test_a_config_for_another_dataset_is_refused_naming_both(tmp_path):
  """dataset=veri (224x224, image-only queries) pointed at a MARS folder trained and
  reported; the opened dataset names both in one line, before any JAX work."""
  raw, out = str(tmp_path / 'raw'), str(tmp_path / 'out')
  make_mars_tree(raw)
  build.build('mars', out, raw, workers=1, show_progress=False)
  dataset = Dataset.open(out)
  dataset.check_config(base.get_config('preset=student_only,dataset=mars'), training=False)
  c = base.get_config('preset=student_only,dataset=veri')
  with pytest.raises(records.DatasetError) as e:
    dataset.check_config(c)
  line = str(e.value)
  assert "config data.name='veri' but" in line and "holds the 'mars' dataset" in line
  assert 'dataset=mars' in line and '\n' not in line


@needs_shared
@pytest.mark.parametrize('damage, named', [
    ('list_is_a_folder', 'test_name.txt: a folder where the text file should be'),
    ('list_not_utf8', 'train_name.txt: not UTF-8 text (byte 0 is 0xff)'),
    ('frame_is_a_folder', '0001C1T0001F002.jpg: a folder where a JPEG frame should be'),
])
def test_a_folder_or_non_text_where_a_file_should_be_is_one_line(tmp_path, damage, named):
  """Faults trial: IsADirectoryError and UnicodeDecodeError tracebacks from the build."""
  raw = tmp_path / 'raw'
  make_mars_tree(str(raw))
  if damage == 'list_is_a_folder':
    os.remove(raw / 'info' / 'test_name.txt')
    os.mkdir(raw / 'info' / 'test_name.txt')
  elif damage == 'list_not_utf8':
    (raw / 'info' / 'train_name.txt').write_bytes(b'\xff\xfe' + b'\x00garbage\n' * 4)
  else:
    frame = raw / 'bbox_train' / '0001' / '0001C1T0001F002.jpg'
    os.remove(frame)
    os.mkdir(frame)
  with pytest.raises(DataError) as e:
    build.build('mars', str(tmp_path / 'out'), str(raw), workers=1, show_progress=False)
  assert named in str(e.value) and '\n' not in str(e.value)
