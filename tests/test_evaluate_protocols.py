"""Feature extraction (masks, chunk averaging, 8 devices) and the protocol runner."""

import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

from configs import base
from data_prep import synthetic
from i2v_jax import evaluation, input_pipeline as ip, train_step
from i2v_jax.distances import pairwise_distance
from i2v_jax.evaluation import visualize
from i2v_jax.dataset_folder import Dataset

DATA = synthetic.SyntheticSpec(num_train_ids=6, num_test_ids=5, min_frames=3,
                               max_frames=9, height=64, width=32, seed=5)


@pytest.fixture(scope='module')
def data_dir(synthetic_data):
  return synthetic_data(DATA)


@pytest.fixture(scope='module')
def setup():
  c = base.get_config('runlocal')
  c.model.width = 4
  c.eval.clip_len = 4
  c.eval.batch_size = 1  # x 8 devices: several steps, the last one padded
  mesh = train_step.make_mesh()
  state = train_step.replicate(
      train_step.create_train_state(c, DATA.num_train_ids, jax.random.key(0)), mesh)
  return c, mesh, state


def frames_of(data_dir, split, row, c):
  jpegs = ip.TrackletReader(Dataset.open(data_dir), split).frames(row)
  return np.stack([ip.decode_frame(j, c.input.height, c.input.width).numpy() for j in jpegs])


def test_student_video_feature_is_the_mean_over_every_frame(data_dir, setup):
  c, mesh, state = setup
  fn = evaluation.make_encode_fn(c, DATA.num_train_ids, 'student')
  variables = evaluation.network_variables(state, 'student')
  got = evaluation.extract_features(c, Dataset.open(data_dir), 'gallery', mode='video', encode_fn=fn,
                                  variables=variables, mesh=mesh)
  student = train_step.build_networks(c, DATA.num_train_ids)['student'].module
  rows = ip.TrackletReader(Dataset.open(data_dir), 'gallery').rows
  assert got.shape[0] == len(rows) and got.std(axis=0).max() > 0
  for r in range(len(rows)):
    frames = frames_of(data_dir, 'gallery', r, c)
    want = student.apply(jax.device_get(variables), frames, train=False)['features'].mean(0)
    np.testing.assert_allclose(got[r], want, rtol=1e-4, atol=1e-5, err_msg=f'row {r}')


def test_teacher_chunks_are_masked_and_weighted_by_valid_frames(data_dir, setup):
  c, mesh, state = setup
  fn = evaluation.make_encode_fn(c, DATA.num_train_ids, 'teacher')
  variables = jax.device_get(evaluation.network_variables(state, 'teacher'))
  got = evaluation.extract_features(c, Dataset.open(data_dir), 'query', mode='video', encode_fn=fn,
                                  variables=variables, mesh=mesh)
  teacher = train_step.build_networks(c, DATA.num_train_ids)['teacher'].module
  for r in range(len(ip.TrackletReader(Dataset.open(data_dir), 'query').rows)):
    frames = frames_of(data_dir, 'query', r, c)
    chunks = [frames[s:s + 4] for s in range(0, len(frames), 4)]
    assert len(chunks[-1]) < 4 or len(frames) % 4 == 0
    # Each chunk alone (no padding at all), weighted by its length.
    feats = [teacher.apply(variables, ch[None], train=False)['features'][0] for ch in chunks]
    want = sum(len(ch) * f for ch, f in zip(chunks, feats)) / len(frames)
    np.testing.assert_allclose(got[r], want, rtol=1e-4, atol=1e-5, err_msg=f'row {r}')


def test_image_mode_uses_the_chosen_frame(data_dir, setup):
  c, mesh, state = setup
  fn = evaluation.make_encode_fn(c, DATA.num_train_ids, 'student')
  variables = jax.device_get(evaluation.network_variables(state, 'student'))
  student = train_step.build_networks(c, DATA.num_train_ids)['student'].module
  for which in ('first', 'middle'):
    c.eval.query_frame = which
    got = evaluation.extract_features(c, Dataset.open(data_dir), 'query', mode='image', encode_fn=fn,
                                    variables=variables, mesh=mesh)
    for r in range(2):
      frames = frames_of(data_dir, 'query', r, c)
      k = 0 if which == 'first' else len(frames) // 2
      want = student.apply(variables, frames[k:k + 1], train=False)['features'][0]
      np.testing.assert_allclose(got[r], want, rtol=1e-4, atol=1e-5)
  c.eval.query_frame = 'first'


def test_protocol_runner_writes_table_json_and_exports(data_dir, setup, tmp_path):
  c, mesh, state = setup
  c.eval.export = True
  c.eval.visualize = 2
  c.eval.visualize_top = 3
  c.eval.rerank = True
  try:
    result = evaluation.run(c, Dataset.open(data_dir), state, DATA.num_train_ids, mesh,
                            workdir=str(tmp_path), step=7, verbose=False)
  finally:
    c.eval.export, c.eval.visualize, c.eval.rerank = False, 0, False
  assert 'ranked_v2v+rerank.png' in os.listdir(tmp_path)  # the re-ranked lists too
  # Each protocol, then its re-ranked variant.
  assert list(result.ranking)[:2] == ['i2v', 'i2v+rerank']
  results = {p: r for p, r in result.ranking.items() if '+rerank' not in p}
  assert list(results) == ['i2v', 'v2v', 'i2i', 'v2i']
  for r in results.values():
    assert r['num_valid_queries'] == DATA.num_test_ids  # each has another camera
    assert 0.0 < r['mAP'] <= 1.0 and r['cmc'].shape == (c.eval.max_rank,)
  summary = json.load(open(tmp_path / 'results.json'))
  assert summary['step'] == 7
  assert summary['protocols']['i2v']['mAP'] == pytest.approx(results['i2v']['mAP'])
  table = open(tmp_path / 'results.md').read()
  assert table.count('\n| ') == 2 + 8 and '| i2v+rerank |' in table and 'R20' in table
  npz = np.load(tmp_path / 'features-gallery-video.npz')
  assert npz['features'].shape[0] == len(npz['pids']) == len(npz['names'])
  assert set(os.listdir(tmp_path)) >= {'ranked_i2v.png', 'features-query-image.npz'}
  assert result.scalars['i2v/mAP'] == pytest.approx(100 * results['i2v']['mAP'])
  assert result.scalars == evaluation.scalar_metrics(result.ranking)  # nothing else was on
  assert 'evaluators' not in summary


def test_video_queries_of_an_image_only_query_split():
  query = {'pids': np.array([3, 3, 9]), 'camids': np.array([1, 2, 1])}
  gallery = {'pids': np.array([3, 4, 3, 3]), 'camids': np.array([2, 1, 1, 1])}
  np.testing.assert_array_equal(evaluation.video_query_rows(query, gallery), [2, 0, -1])


def test_encoders_follow_config_and_available_networks():
  c = base.get_config('preset=teacher_only')
  assert evaluation.encoders(c) == {'image': 'teacher', 'video': 'teacher'}
  c = base.get_config('preset=student_only')
  assert evaluation.encoders(c) == {'image': 'student', 'video': 'student'}
  c = base.get_config('preset=tkp')
  assert evaluation.encoders(c) == {'image': 'student', 'video': 'teacher'}
  c.eval.gallery_encoder = 'student'
  assert evaluation.encoders(c) == {'image': 'student', 'video': 'student'}
  for preset in ('mdkt', 'vkd'):  # their feature spaces are not tied: student gallery
    assert evaluation.encoders(base.get_config(f'preset={preset}'))['video'] == 'student'


def test_ranked_lists_worst_first_without_junk_and_png_borders(data_dir, tmp_path):
  query = {'features': np.array([[1.0, 0.0], [0.0, 1.0]]), 'pids': np.array([1, 2]),
           'camids': np.array([1, 1])}
  gallery = {'features': np.array([[1.0, 0.1], [1.0, 0.0], [0.1, 1.0], [1.0, 0.2]]),
             'pids': np.array([1, 1, 2, 3]), 'camids': np.array([2, 1, 2, 2])}
  rows = visualize.worst_queries(np.array([0.9, 0.4]), 2)
  distmat = pairwise_distance(query['features'][rows], gallery['features'], 'cosine', xp=np)
  lists = visualize.ranked_lists(rows, distmat, query, gallery, top=3)
  # Query 1 (AP 0.4) first; gallery row 1 is junk for query 0 (same pid and camera).
  assert [(q, [(g, m) for g, m, _ in r]) for q, r in lists] == [
      (1, [(2, True), (3, False), (0, False)]), (0, [(0, True), (3, False), (2, False)])]
  # Distances are the cosine distances 1 - cos, by hand: query 0 . gallery 0 = 1/|g0|.
  assert lists[1][1][0][2] == pytest.approx(1 - 1 / np.sqrt(1.01))
  assert lists[1][1][1][2] == pytest.approx(1 - 1 / np.sqrt(1.04))
  path = str(tmp_path / 'ranked.png')
  visualize.render(lists, ip.TrackletReader(Dataset.open(data_dir), 'query'), [0] * 5,
                   ip.TrackletReader(Dataset.open(data_dir), 'gallery'), path, size=(16, 32))
  image = np.asarray(Image.open(path).convert('RGB'))
  cell = 16 + 8 + 4
  assert image.shape == (2 * (32 + 8 + 4) + 4, 4 * cell + 8, 3)
  assert tuple(image[5, 1]) == visualize.BLUE
  assert tuple(image[5, 8 + cell + 1]) == visualize.GREEN
  assert tuple(image[5, 8 + 2 * cell + 1]) == visualize.RED
  assert os.listdir(tmp_path) == ['ranked.png']  # no temporary file left


def test_labelled_picture_has_a_title_labels_and_the_input_aspect_ratio(data_dir, tmp_path):
  assert visualize.thumbnail_size(256, 128) == (64, 128)
  assert visualize.thumbnail_size(224, 224) == (128, 128)  # VeRi: square
  query = {'pids': np.array([1, 2]), 'camids': np.array([1, 1]),
           'names': np.array(['q-one', 'q-two'])}
  gallery = {'pids': np.array([1, 3]), 'camids': np.array([2, 2]),
             'names': np.array(['g0', 'g1'])}
  assert list(visualize.chosen_queries(query['names'], ['q-two', 'q-one'])) == [1, 0]
  with pytest.raises(ValueError, match="'nobody'"):
    visualize.chosen_queries(query['names'], ['nobody'])
  lists = visualize.ranked_lists([0], np.array([[0.2, 0.5]]), query, gallery, top=2)
  plain, labelled = str(tmp_path / 'plain.png'), str(tmp_path / 'labelled.png')
  readers = ip.TrackletReader(Dataset.open(data_dir), 'query'), ip.TrackletReader(Dataset.open(data_dir), 'gallery')
  visualize.render(lists, readers[0], [0] * 5, readers[1], plain, size=(32, 32))
  visualize.render(lists, readers[0], [0] * 5, readers[1], labelled, size=(32, 32),
                   title='I2V: chosen queries', query=query, gallery=gallery,
                   ap=np.array([0.5, 1.0]))
  a = np.asarray(Image.open(plain).convert('RGB'))
  b = np.asarray(Image.open(labelled).convert('RGB'))
  assert b.shape[0] == a.shape[0] + 18 + 36  # title + 3 lines
  # A labelled cell is as wide as its longest label ('pid 1 c1', 'AP 50.0%': 8
  # characters of 6 px, + 6), not cut: 3 cells (query + top 2) of 54 + 4, + 8.
  assert a.shape[1] == 3 * (32 + 8 + 4) + 8 and b.shape[1] == 3 * (6 * 8 + 6 + 4) + 8
  title_band, label_band = b[:18], b[18 + 4 + 40:18 + 4 + 40 + 36, :40]
  assert (title_band < 128).any() and (label_band < 128).any()  # dark text drawn there
