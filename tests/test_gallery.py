"""The encoded gallery file and its search: exact top-k equals a full stable sort
(from the definition, in the test), at any block size; another model's queries
are refused; the approximate index needs FAISS and says so in one line."""

import numpy as np
import pytest

from i2v_jax.gallery import Gallery, GalleryError, recall_at


def _problem(g=1000, d=16, q=7, seed=0):
  rng = np.random.default_rng(seed)
  feats = rng.normal(size=(g, d)).astype(np.float32)
  feats[10] = feats[3]  # an exact tie: gallery order decides
  queries = rng.normal(size=(q, d)).astype(np.float32)
  queries[0] = feats[3]
  return feats, queries


def test_exact_search_is_a_stable_sort_of_cosine_at_any_block(tmp_path):
  feats, queries = _problem()
  gallery = Gallery.build(feats, [f't{i}' for i in range(len(feats))], np.arange(len(feats)) % 6,
                          'model-a')
  fn = feats / np.linalg.norm(feats, axis=1, keepdims=True)
  qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
  want = np.argsort(-(qn @ fn.T), axis=1, kind='stable')[:, :10]
  for block in (64, 333, 1000, 4096):
    got = gallery.search(queries, 10, 'model-a', block=block)
    np.testing.assert_array_equal(got['index'], want)
    np.testing.assert_allclose(got['distance'], 1 - np.take_along_axis(qn @ fn.T, want, 1),
                               atol=1e-6)
  assert list(got['index'][0][:2]) == [3, 10]  # the tie, in gallery order
  path = str(tmp_path / 'g.npz')
  gallery.save(path)
  again = Gallery.load(path)
  np.testing.assert_array_equal(again.search(queries, 10, 'model-a')['index'], want)
  assert recall_at(want, want) == 1.0 and recall_at(want[:, ::-1], want) == 1.0


def test_other_models_queries_and_bad_files_are_one_line(tmp_path):
  feats, queries = _problem(g=50)
  gallery = Gallery.build(feats, [str(i) for i in range(50)], [0] * 50, 'model-a')
  for call, expected in (
      (lambda: gallery.search(queries, 5, 'model-b'), "queries from model 'model-b' against"),
      (lambda: gallery.search(queries[:, :3], 5, 'model-a'), 'expected (N, 16) embeddings'),
      (lambda: Gallery.load(str(tmp_path / 'none.npz')), 'no gallery file there'),
      (lambda: Gallery.build(feats, ['a'], [0], 'm'), 'a gallery needs (G, D) features')):
    with pytest.raises(GalleryError) as e:
      call()
    assert '\n' not in str(e.value) and expected in str(e.value)
  (tmp_path / 'bad.npz').write_bytes(b'not a zip')
  with pytest.raises(GalleryError, match='bad.npz: not a gallery file'):
    Gallery.load(str(tmp_path / 'bad.npz'))


def test_the_approximate_index_finds_the_exact_neighbours_or_names_its_package():
  feats, queries = _problem(g=4000, d=32, q=50)
  gallery = Gallery.build(feats, [str(i) for i in range(4000)], [0] * 4000, 'm')
  try:
    import faiss  # noqa: F401
  except ImportError:
    with pytest.raises(GalleryError, match='needs FAISS: pip install faiss-cpu'):
      gallery.index('ivf')
    return
  index = gallery.index('ivf', nlist=16)
  exact = gallery.search(queries, 10, 'm')['index']
  every_list = index.search(queries, 10, 'm', nprobe=16)['index']  # all lists: exact
  assert recall_at(every_list, exact) > 0.99
  with pytest.raises(GalleryError, match="queries from model 'x'"):
    index.search(queries, 10, 'x')


def test_the_device_path_finds_the_host_paths_neighbours():
  """Scored on JAX's device (here the CPU backend, as on an accelerator), blocks
  kept there: the same rows as the host path and a stable sort, ties by row."""
  feats, queries = _problem(g=3000, d=32, q=9, seed=1)
  gallery = Gallery.build(feats, [str(i) for i in range(3000)], [0] * 3000, 'm')
  fn = feats / np.linalg.norm(feats, axis=1, keepdims=True)
  qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
  want = np.argsort(-(qn @ fn.T), axis=1, kind='stable')[:, :10]
  for block in (700, 4096):
    got = gallery.search(queries, 10, 'm', block=block, device=True)
    np.testing.assert_array_equal(got['index'], want)
    np.testing.assert_allclose(got['distance'], 1 - np.take_along_axis(qn @ fn.T, want, 1),
                               atol=1e-5)
    np.testing.assert_array_equal(
        gallery.search(queries, 10, 'm', block=block, device=False)['index'], want)
  assert list(got['index'][0][:2]) == [3, 10]  # the tie, in gallery order
  assert sorted(gallery._device_blocks) == [700, 4096]  # copied once per block size


def test_the_pq_index_rescores_its_shortlist_exactly():
  """pq: a compressed scan shortlists, the shortlist is rescored from the float
  rows, so distances are exact and the order a stable sort's; with every row
  shortlisted the answer is exact search's. (Isotropic 32-d rows are the hardest
  case for 4-bit codes: recall at 200 of 3000 is well under 1 here.)"""
  pytest.importorskip('faiss', reason='FAISS is the deploy extra (.ci/run installs it)')
  feats, queries = _problem(g=3000, d=32, q=20, seed=2)
  gallery = Gallery.build(feats, [str(i) for i in range(3000)], [0] * 3000, 'm')
  index = gallery.index('pq')
  fn = feats / np.linalg.norm(feats, axis=1, keepdims=True)
  qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
  exact = np.argsort(-(qn @ fn.T), axis=1, kind='stable')[:, :10]
  everything = index.search(queries, 10, 'm', candidates=3000)
  np.testing.assert_array_equal(everything['index'], exact)
  short = index.search(queries, 10, 'm', candidates=200)
  rows = short['index']
  np.testing.assert_allclose(short['distance'], 1 - np.einsum('nkd,nd->nk', fn[rows], qn),
                             atol=1e-6)
  assert np.all(np.diff(short['distance'], axis=1) >= 0)
  # A longer shortlist holds the shorter one, so exact rescoring can only find more.
  few = index.search(queries, 10, 'm', candidates=20)['index']
  assert recall_at(few, exact) <= recall_at(rows, exact) < 1.0
  with pytest.raises(GalleryError, match="index kind 'hnsw': choose one of ivf, pq"):
    gallery.index('hnsw')
  odd = Gallery.build(feats[:, :30], [str(i) for i in range(3000)], [0] * 3000, 'm')
  with pytest.raises(GalleryError, match='these are 30-d: choose dims_per_code dividing it'):
    odd.index('pq', dims_per_code=4)
