"""Training and evaluation input: determinism, sharding, alignment, the synthetic benchmark."""

import io

import numpy as np
import pytest
from PIL import Image

from configs import base
from data_prep import build, synthetic
from i2v_jax import evaluation, input_pipeline as ip, records
from i2v_jax.dataset_folder import Dataset

DATA = synthetic.SyntheticSpec(num_train_ids=12, num_test_ids=10, min_frames=3,
                               max_frames=9, height=64, width=32, seed=3)


@pytest.fixture(scope='module')
def data_dir(synthetic_data):
  return synthetic_data(DATA)


def config(**overrides):
  c = base.get_config('runlocal')
  for k, v in overrides.items():
    node = c
    *path, leaf = k.split('.')
    for p in path:
      node = node[p]
    node[leaf] = v
  return c


def batches(data_dir, cfg, start, n, **kw):
  return list(ip.train_dataset(Dataset.open(data_dir), cfg, seed=7, start_step=start, num_steps=n,
                               **kw).as_numpy_iterator())


def test_batch_is_a_function_of_seed_and_step(data_dir):
  cfg = config()
  run = batches(data_dir, cfg, 0, 4)
  late = batches(data_dir, cfg, 3, 1)[0]
  for k in late:
    np.testing.assert_array_equal(run[3][k], late[k])
  assert not np.array_equal(run[0]['labels'], run[1]['labels'])
  b = run[0]
  p, k = cfg.input.num_ids, cfg.input.tracklets_per_id
  assert b['clips'].shape == (p * k, cfg.input.clip_len, 64, 32, 3)
  assert b['clips'].dtype == np.float32 and b['labels'].dtype == np.int32
  # P x K: P distinct identities, each K times, consecutive.
  labels = b['labels'].reshape(p, k)
  assert (labels == labels[:, :1]).all() and len(set(labels[:, 0])) == p


def test_processes_get_disjoint_identities_that_make_up_the_global_batch(data_dir):
  cfg = config(**{'input.num_ids': 4})
  whole = batches(data_dir, cfg, 5, 1)[0]
  parts = [batches(data_dir, cfg, 5, 1, process_index=i, process_count=2)[0]
           for i in range(2)]
  assert not set(parts[0]['labels']) & set(parts[1]['labels'])
  for k in whole:
    np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), whole[k])


def test_clip_frames_follow_restricted_random_sampling():
  rng = np.random.default_rng(0)
  for n in (1, 3, 4, 10, 97):
    for _ in range(20):
      idx = ip.restricted_random(n, 4, rng)
      assert len(idx) == 4 and (np.diff(idx) >= 0).all() and idx.max() < n
      if n >= 4:
        bounds = (np.arange(5) * n) // 4
        assert all(bounds[i] <= idx[i] < bounds[i + 1] for i in range(4))


def sampler_for(data_dir, **kw):
  args = dict(num_ids=4, tracklets_per_id=2, clip_len=4, height=64, width=32,
              pad_crop=0, flip=False, erasing_prob=0.5, seed=7)
  return ip.TrainSampler(records.load_index(data_dir, 'train'), **dict(args, **kw))


def test_multiview_sampling_draws_each_frame_from_another_tracklet(data_dir):
  """VKD's MultiViewTemporalTransform: frame k from the k-th tracklet of a random
  order of the identity's tracklets (cycling when it has fewer than T)."""
  rows = records.load_index(data_dir, 'train')
  for step in range(10):
    plan = sampler_for(data_dir, sampling='multiview', clip_len=5)(step)
    for row, frame_rows, frames in zip(plan['rows'], plan['frame_rows'], plan['frames']):
      own = [i for i, r in enumerate(rows) if r['label'] == rows[row]['label']]
      assert set(frame_rows) <= set(own)
      n = len(own)
      assert len(set(frame_rows)) == min(n, 5)  # distinct until the order repeats
      assert all(frame_rows[k] == frame_rows[k % n] for k in range(5))
      assert all(0 <= f < rows[r]['num_frames'] for r, f in zip(frame_rows, frames))
  with pytest.raises(ValueError, match="input.sampling='views'"):
    sampler_for(data_dir, sampling='views')


def test_shuffled_frames_are_the_same_frames_in_random_order(data_dir):
  plain = sampler_for(data_dir)(3)
  shuffled = sampler_for(data_dir, shuffle_frames=True)(3)
  for k in ('rows', 'flip', 'crop', 'erase'):
    np.testing.assert_array_equal(plain[k], shuffled[k])
  pairs = lambda p: [sorted(zip(r, f)) for r, f in zip(p['frame_rows'], p['frames'])]
  assert pairs(plain) == pairs(shuffled)
  assert not np.array_equal(plain['frames'], shuffled['frames'])


def test_augmentations_switch_off_to_the_plain_frames(data_dir):
  cfg = config(**{'input.flip': False, 'input.pad_crop': 0, 'input.erasing_prob': 0.0})
  b = batches(data_dir, cfg, 2, 1)[0]
  sampler = ip.TrainSampler(records.load_index(data_dir, 'train'), num_ids=4,
                            tracklets_per_id=2, clip_len=4, height=64, width=32,
                            pad_crop=0, flip=False, erasing_prob=0.0, seed=7)
  plan = sampler(2)
  reader = ip.TrackletReader(Dataset.open(data_dir), 'train')
  jpeg = reader.frames(int(plan['rows'][1]))[int(plan['frames'][1, 2])]
  want = (np.asarray(Image.open(io.BytesIO(jpeg)).convert('RGB'), np.float32) / 255
          - ip.IMAGENET_MEAN) / ip.IMAGENET_STD
  np.testing.assert_allclose(b['clips'][1, 2], want, atol=1e-4)


def test_flip_is_shared_by_the_whole_clip(data_dir):
  base_cfg = dict(**{'input.pad_crop': 0, 'input.erasing_prob': 0.0})
  plain = batches(data_dir, config(**base_cfg, **{'input.flip': False}), 9, 1)[0]
  b = batches(data_dir, config(**base_cfg), 9, 1)[0]
  np.testing.assert_array_equal(b['clips'], plain['clips'])  # the host does not augment
  assert (b['flip'] == b['flip'][:, :1]).all() and b['flip'].any() and not b['flip'].all()
  flipped = np.asarray(ip.augment_clips(b['clips'], b['flip'], b['crop'], b['erase'], 0))
  for clip, ref, f in zip(flipped, plain['clips'], b['flip'][:, 0]):
    np.testing.assert_array_equal(clip, ref[:, :, ::-1] if f else ref)


def _augment_by_definition(frame, flip, crop, erase, pad):
  """One (H, W, 3) normalised frame: mirrored, then padded by ``pad`` zero
  pixels (black: -mean/std after normalisation) and cropped at ``crop``, then
  the box (y0, x0, h, w) set to 0 (the mean pixel), written as loops."""
  h, w, _ = frame.shape
  black = -ip.IMAGENET_MEAN / ip.IMAGENET_STD
  out = np.empty_like(frame)
  for y in range(h):
    for x in range(w):
      sy, sx = y + crop[0] - pad, x + crop[1] - pad  # the source pixel before padding
      if 0 <= sy < h and 0 <= sx < w:
        out[y, x] = frame[sy, w - 1 - sx] if flip else frame[sy, sx]
      else:
        out[y, x] = black
      if erase[0] <= y < erase[0] + erase[2] and erase[1] <= x < erase[1] + erase[3]:
        out[y, x] = 0.0
  return out


def test_device_augmentations_follow_their_definition(data_dir):
  """augment_clips (what the step runs) against the definition on a real batch,
  every augmentation on: flip, pad 4 + crop, erasing."""
  cfg = config(**{'input.pad_crop': 4, 'input.erasing_prob': 0.7})
  b = batches(data_dir, cfg, 11, 1)[0]
  got = np.asarray(ip.augment_clips(b['clips'], b['flip'], b['crop'], b['erase'], 4))
  assert b['erase'][..., 2].any() and b['flip'].any() and (b['crop'] != 4).any()
  for i in range(len(got)):
    for j in range(got.shape[1]):
      want = _augment_by_definition(b['clips'][i, j], b['flip'][i, j], b['crop'][i, j],
                                    b['erase'][i, j], 4)
      np.testing.assert_allclose(got[i, j], want, atol=1e-6)


def test_erasing_boxes_follow_the_random_erasing_distribution(data_dir):
  """Zhong et al.'s random erasing, as the sampler draws it: a frame is erased
  with probability p; the box covers 2-40% of the frame with aspect ratio in
  [0.3, 1/0.3] (before clipping to the frame) and lies inside it."""
  sampler = sampler_for(data_dir, erasing_prob=0.5, clip_len=4)
  boxes = np.concatenate([sampler(s)['erase'].reshape(-1, 4) for s in range(200)])
  on = boxes[:, 2] > 0
  assert abs(on.mean() - 0.5) < 0.05  # 6,400 frames: 4 standard deviations
  y0, x0, h, w = boxes[on].T
  assert (y0 >= 0).all() and (x0 >= 0).all() and (y0 + h <= 64).all() and (x0 + w <= 32).all()
  area = h * w / (64 * 32)
  assert area.max() <= 0.4 + 0.05 and np.median(area) > 0.05
  assert (boxes[~on][:, 2:] == 0).all()


def test_too_few_identities_is_a_clear_error(data_dir):
  cfg = config(**{'input.num_ids': 50})
  with pytest.raises(ValueError, match=r'index-train.json: 12 identities.*input.num_ids=50'):
    ip.train_dataset(Dataset.open(data_dir), cfg, seed=0)


def test_eval_chunks_cover_every_frame_and_pad_processes(data_dir):
  cfg = config(**{'eval.clip_len': 4, 'eval.batch_size': 3})
  rows = records.load_index(data_dir, 'gallery')
  seen = {}
  counts = []
  for p in range(3):
    got = list(ip.eval_dataset(Dataset.open(data_dir), 'gallery', cfg, mode='video', process_index=p,
                               process_count=3).as_numpy_iterator())
    counts.append(len(got))
    for b in got:
      assert b['frames'].shape == (3, 4, 64, 32, 3)
      for row, mask in zip(b['row'], b['mask']):
        if row < 0:
          assert not mask.any()
          continue
        seen[row] = seen.get(row, 0) + mask.sum()
  assert len(set(counts)) == 1  # every process runs the same number of steps
  assert seen == {i: r['num_frames'] for i, r in enumerate(rows)}
  chunks = ip.eval_chunks(rows, mode='video', clip_len=4, max_frames=2)
  assert all((c[1] >= 0).sum() <= 2 for c in chunks)
  queries = list(ip.eval_dataset(Dataset.open(data_dir), 'query', cfg, mode='image').as_numpy_iterator())
  assert queries[0]['frames'].shape[1] == 1


def test_summary_table_lists_every_split(data_dir):
  table = Dataset.open(data_dir).summary()
  for split in ('train', 'query', 'gallery'):
    assert split in table
  assert ' 12 ' in table  # train ids


def colour_histogram(frames):
  """(N, 128, 64, 3) uint8 -> (N, 64) sqrt of joint 4x4x4 RGB histograms.

  Body-centred crop (the background is the camera's, not the person's) and grey-world
  normalisation (divides out the camera's colour gain). A whole-frame histogram
  scores at chance here: the backgrounds dominate it.
  """
  f = frames[:, 8:120, 18:46].astype(np.float64)
  f = f / f.mean(axis=(1, 2), keepdims=True) * 110
  q = np.clip(f // 64, 0, 3).astype(np.int64)
  codes = q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]
  hist = np.stack([np.bincount(c.ravel(), minlength=64) for c in codes]).astype(np.float64)
  return np.sqrt(hist / hist.sum(1, keepdims=True))


def test_synthetic_is_learnable_and_single_frames_are_harder(tmp_path):
  out = str(tmp_path / 'bench')
  build.build('synthetic', out, spec=synthetic.SyntheticSpec(num_train_ids=2, seed=11),
              show_progress=False)
  feats = {}
  for split in ('query', 'gallery'):
    reader = ip.TrackletReader(Dataset.open(out), split)
    per_frame = [colour_histogram(np.stack([np.asarray(Image.open(io.BytesIO(f)))
                                            for f in reader.frames(i)]))
                 for i in range(len(reader.rows))]
    feats[split] = (per_frame, np.array([r['pid'] for r in reader.rows]),
                    np.array([r['camid'] for r in reader.rows]))
  (qf, qp, qc), (gf, gp, gc) = feats['query'], feats['gallery']
  gallery = np.stack([f.mean(0) for f in gf])
  dist = lambda q: ((q[:, None] - gallery[None]) ** 2).sum(-1)
  i2v = evaluation.reference_metrics(dist(np.stack([f[0] for f in qf])), qp, gp, qc, gc)
  v2v = evaluation.reference_metrics(dist(np.stack([f.mean(0) for f in qf])), qp, gp, qc, gc)
  rng = np.random.default_rng(0)
  chance = np.mean([evaluation.reference_metrics(rng.random(dist(gallery[:48]).shape),
                                          qp, gp, qc, gc)['mAP'] for _ in range(10)])
  assert i2v['num_valid_queries'] == 48
  # Measured: chance 0.024, I2V 0.20, V2V 0.35 (seed 11).
  assert i2v['mAP'] > 4 * chance, (i2v['mAP'], chance)
  assert v2v['mAP'] > i2v['mAP'] + 0.05, (v2v['mAP'], i2v['mAP'])


def test_an_edited_index_is_refused_not_used(data_dir, tmp_path):
  """Faults D: a record read through the index must be the one the index names,
  and no shard path may leave the dataset folder."""
  import json
  import shutil
  copy = str(tmp_path / 'data')
  shutil.copytree(data_dir, copy)
  path = f'{copy}/index-query.json'
  index = json.load(open(path))
  index['tracklets'][0]['pid'] += 1000
  json.dump(index, open(path, 'w'))
  reader = ip.TrackletReader(Dataset.open(copy), 'query')
  with pytest.raises(records.DatasetError, match=r'index-query.json: .* says pid=\d+ but the '
                                                 r'record holds \d+'):
    reader.frames(0)
  assert reader.frames(1)  # the others read
  index['tracklets'][0]['pid'] -= 1000
  index['tracklets'][1]['shard'] = '../' + index['tracklets'][1]['shard']
  json.dump(index, open(path, 'w'))
  with pytest.raises(records.DatasetError, match=r"shard '\.\./.*' is not a file name inside"):
    records.load_index(copy, 'query')


def test_metadata_that_cannot_be_right_is_refused(data_dir, tmp_path):
  """Faults F: num_classes of 10**12 (or a list, or no num_classes) is one line."""
  import json
  import shutil
  copy = str(tmp_path / 'data')
  shutil.copytree(data_dir, copy)
  meta = json.load(open(f'{copy}/metadata.json'))
  for bad, named in (({**meta, 'num_classes': 10 ** 12}, 'num_classes=1000000000000'),
                     ({k: v for k, v in meta.items() if k != 'num_classes'}, 'num_classes=None'),
                     ([meta], 'a JSON object was expected, not list')):
    json.dump(bad, open(f'{copy}/metadata.json', 'w'))
    with pytest.raises(records.DatasetError, match=named):
      records.load_metadata(copy)


def _edit_index(folder, split, edit):
  import json
  path = f'{folder}/index-{split}.json'
  with open(path) as f:
    index = json.load(f)
  index['tracklets'] = edit(index['tracklets'])
  with open(path, 'w') as f:
    json.dump(index, f)


def _halve_first(rows):
  rows[0] = dict(rows[0], num_frames=rows[0]['num_frames'] // 2)
  return rows


def _relabel_first(rows):
  rows[0] = dict(rows[0], label=(rows[0]['label'] + 1) % 8)
  return rows


@pytest.mark.parametrize('split, edit, named', [
    ('gallery', lambda rows: rows[:-1], r'disagrees with .*metadata.json \(tracklets'),
    ('gallery', lambda rows: rows + rows[-1:], 'listed twice'),
    ('gallery', _halve_first, r'disagrees with .*metadata.json \(frames'),
    ('train', _relabel_first, 'maps that pid to'),
    ('query', lambda rows: [dict(r, num_frames=0) for r in rows], 'num_frames=0'),
])
def test_an_edited_index_is_refused_when_the_dataset_is_opened(tmp_path, data_dir, split,
                                                               edit, named):
  """Deleted, duplicated, shortened or relabelled rows changed results silently;
  the dataset, opened once, checks the indexes against metadata.json."""
  import shutil
  copy = str(tmp_path / 'data')
  shutil.copytree(data_dir, copy)
  Dataset.open(copy)  # as built: fine
  _edit_index(copy, split, edit)
  with pytest.raises(records.DatasetError, match=named):
    Dataset.open(copy)


def test_a_frame_count_raised_in_index_and_metadata_is_named_at_read(tmp_path, data_dir):
  """Both files edited alike: the record itself disagrees, named (not a hang)."""
  import json
  import shutil
  copy = str(tmp_path / 'data')
  shutil.copytree(data_dir, copy)
  _edit_index(copy, 'gallery', lambda rows: [dict(rows[0], num_frames=rows[0]['num_frames'] + 5)]
              + rows[1:])
  meta = json.load(open(f'{copy}/metadata.json'))
  meta['splits']['gallery']['frames'] += 5
  json.dump(meta, open(f'{copy}/metadata.json', 'w'))
  reader = ip.TrackletReader(Dataset.open(copy), 'gallery')
  with pytest.raises(records.DatasetError, match='num_frames=.* but the record holds'):
    reader.frames(0)


def test_prepare_image_casts_frames_stored_at_the_input_size_and_takes_batches():
  """A frame at the input size is only cast (the antialiased resize to its own
  size is the identity, so the values are the resized ones bit for bit); other
  sizes are resized; a batch gives what its frames give one by one."""
  import tensorflow as tf
  rng = np.random.default_rng(0)
  frames = (rng.random((3, 64, 32, 3)) * 255).astype(np.uint8)
  for size in ((64, 32), (32, 16)):
    want = ((tf.image.resize(frames, size, antialias=True).numpy() / np.float32(255)
             - ip.IMAGENET_MEAN) / ip.IMAGENET_STD)
    batch = np.asarray(ip.prepare_image(frames, *size))
    np.testing.assert_array_equal(batch, want)
    np.testing.assert_array_equal(np.stack([ip.prepare_image(f, *size) for f in frames]), batch)
  unscaled = np.asarray(ip.prepare_image(frames[0], 64, 32, normalize=False))
  np.testing.assert_array_equal(unscaled, frames[0].astype(np.float32) / np.float32(255))
