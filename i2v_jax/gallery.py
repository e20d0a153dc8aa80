"""An encoded gallery kept as a file, searched exactly or through an approximate index.

    gallery = Gallery.build(features, names, cameras, model_id)   # or Gallery.load(path)
    gallery.save('city.gallery.npz')
    top = gallery.search(queries, k=10, model_id=model_id)        # exact, blocked
    index = gallery.index('pq')                                    # FAISS (optional package)
    top = index.search(queries, k=10, model_id=model_id, candidates=1000)

Embeddings are L2-normalised (what `i2v_jax.export_model` and evaluation rank by
cosine), so nearest = largest inner product; ``distances`` are returned as
1 - cosine. ``model_id`` names the model the features came from (an exported
file's sha256, or a run and checkpoint): a search with another model's queries is
refused, since its embeddings live in another space.

Exact search holds ``block`` gallery rows x the query batch of scores at once and
keeps each query's best k per block, so its memory is the gallery plus one
block, whatever the gallery's size: on the host with `np.argpartition`, or, when
JAX has an accelerator (or ``device=True``), with the gallery's blocks kept on
the device (copied once) and each block's scores and `lax.top_k` computed there;
only the (N, k) winners come back.

Approximate indexes (FAISS, an optional dependency: ``pip install faiss-cpu``,
refused in one line when it is not installed), by ``kind``:

* ``ivf``: an inverted file (``IndexIVFFlat``, inner product): k-means lists,
  ``nprobe`` of them scanned exactly per query. Fast when the gallery clusters
  the way its k-means lists do; a query whose neighbours fall in lists it does
  not visit misses them.
* ``pq``: every row scanned, compressed (``IndexPQFastScan``: sub-vectors of
  ``dims_per_code`` dimensions, 4 bits each, so a 2048-d row takes 256 bytes at
  the default 4, 128 at 8; scored from SIMD lookup tables), then each query's
  ``candidates`` best rescored exactly from the gallery's float32 rows: the
  returned distances are exact, and so is the order among the candidates.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from i2v_jax import atomic
from i2v_jax.errors import UserError


class GalleryError(UserError):
  """A gallery file, query batch or index request that cannot be used as given."""


@dataclasses.dataclass
class Gallery:
  features: np.ndarray   # (G, D) float32, L2-normalised rows
  names: np.ndarray      # (G,) tracklet names
  cameras: np.ndarray    # (G,) camera ids
  model_id: str
  # The gallery's blocks on the accelerator, by block size (exact search copies them once).
  _device_blocks: Dict[int, list] = dataclasses.field(default_factory=dict, init=False,
                                                      repr=False, compare=False)

  @classmethod
  def build(cls, features, names: Sequence[str], cameras: Sequence[int],
            model_id: str) -> 'Gallery':
    features = np.asarray(features, np.float32)
    if features.ndim != 2 or len(features) != len(names) or len(names) != len(cameras):
      raise GalleryError(f'a gallery needs (G, D) features and G names and cameras; got '
                         f'{features.shape}, {len(names)} names, {len(cameras)} cameras')
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return cls(features / np.maximum(norms, 1e-12), np.asarray(names), np.asarray(cameras),
               str(model_id))

  def save(self, path: str) -> None:
    """One ``.npz`` (written whole, then renamed)."""
    atomic.write_npz(path, features=self.features, names=self.names, cameras=self.cameras,
                     model_id=np.asarray(self.model_id))

  @classmethod
  def load(cls, path: str) -> 'Gallery':
    if not os.path.isfile(path):
      raise GalleryError(f'{path}: no gallery file there; make one with Gallery.build(...).save')
    try:
      with np.load(path, allow_pickle=False) as f:
        return cls(f['features'], f['names'], f['cameras'], str(f['model_id']))
    except (OSError, ValueError, KeyError) as e:
      raise GalleryError(f'{path}: not a gallery file ({type(e).__name__}: '
                         f'{" ".join(str(e).split())[:100]}); build it again') from None

  def _check(self, queries, model_id: str) -> np.ndarray:
    if model_id != self.model_id:
      raise GalleryError(f'queries from model {model_id!r} against a gallery encoded by '
                         f'{self.model_id!r}: their embeddings are not comparable; encode '
                         'both with one model')
    queries = np.asarray(queries, np.float32)
    if queries.ndim != 2 or queries.shape[1] != self.features.shape[1]:
      raise GalleryError(f'queries of shape {queries.shape}: expected (N, '
                         f'{self.features.shape[1]}) embeddings')
    return queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)

  def search(self, queries, k: int, model_id: str, block: int = 65536,
             device: Optional[bool] = None) -> Dict[str, np.ndarray]:
    """Exact top-``k``: {'index' (N, k) gallery rows, 'distance' (N, k) 1 - cosine,
    nearest first; ties by gallery order}. ``device``: score on JAX's default
    device (None: when it is an accelerator)."""
    q = self._check(queries, model_id)
    g = len(self.features)
    k = min(k, g)
    if device is None:
      device = _has_accelerator()
    best_s = np.full((len(q), 0), -np.inf, np.float32)
    best_i = np.zeros((len(q), 0), np.int64)
    top = self._device_top(q, block) if device else self._host_top(q, block)
    for start, (scores, part) in zip(range(0, g, block), top(k)):
      best_s = np.concatenate([best_s, scores], axis=1)
      best_i = np.concatenate([best_i, part + start], axis=1)
      order = np.lexsort((best_i, -best_s), axis=1)[:, :k]  # by score, then gallery row
      best_s = np.take_along_axis(best_s, order, axis=1)
      best_i = np.take_along_axis(best_i, order, axis=1)
    return {'index': best_i, 'distance': 1.0 - best_s}

  def _host_top(self, q: np.ndarray, block: int):
    """k -> each block's (scores, rows within the block) of its best k, numpy."""
    def top(k):
      for start in range(0, len(self.features), block):
        scores = q @ self.features[start:start + block].T
        keep = min(k, scores.shape[1])
        part = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]
        yield np.take_along_axis(scores, part, axis=1), part
    return top

  def _device_top(self, q: np.ndarray, block: int):
    """The same on JAX's default device: the gallery's blocks are copied there
    once (kept for later searches), each block's best k by `lax.top_k` (ties:
    the lower row first), only those come back."""
    if block not in self._device_blocks:
      self._device_blocks[block] = [jax.device_put(self.features[s:s + block])
                                    for s in range(0, len(self.features), block)]
    qd = jnp.asarray(q)

    def top(k):
      for rows in self._device_blocks[block]:
        scores, part = _block_top_k(qd, rows, min(k, rows.shape[0]))
        yield np.asarray(scores), np.asarray(part, np.int64)
    return top

  def index(self, kind: str = 'ivf', nlist: int = 1024, train_size: int = 100_000,
            seed: int = 0, dims_per_code: int = 4) -> 'ApproximateIndex':
    """An approximate index over the gallery: ``ivf`` (``nlist`` lists) or ``pq``
    (codes of ``dims_per_code`` dimensions; the module's docstring says how each
    searches); both trained on at most ``train_size`` rows drawn with ``seed``."""
    if kind not in INDEX_KINDS:
      raise GalleryError(f'index kind {kind!r}: choose one of {", ".join(INDEX_KINDS)}')
    try:
      import faiss
    except ImportError:
      raise GalleryError('an approximate index needs FAISS: pip install faiss-cpu (exact '
                         'search needs nothing)') from None
    d = self.features.shape[1]
    if kind == 'ivf':
      nlist = max(1, min(nlist, len(self.features) // 39))  # FAISS wants >= 39 points a list
      index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    else:
      if dims_per_code < 1 or d % dims_per_code or (d // dims_per_code) % 2:
        raise GalleryError(f'a pq index splits rows into an even number of '
                           f'{dims_per_code}-d sub-vectors; these are {d}-d: choose '
                           'dims_per_code dividing it, or use ivf or exact search')
      if len(self.features) < 16:
        raise GalleryError(f'a pq index learns 16 codes a sub-vector; this gallery has '
                           f'{len(self.features)} rows: search it exactly')
      index = faiss.IndexPQFastScan(d, d // dims_per_code, 4, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    sample = self.features[rng.choice(len(self.features), min(train_size, len(self.features)),
                                      replace=False)]
    index.train(sample)
    index.add(self.features)
    return ApproximateIndex(index, kind, self)


INDEX_KINDS = ('ivf', 'pq')


@dataclasses.dataclass
class ApproximateIndex:
  faiss_index: object
  kind: str
  gallery: Gallery = dataclasses.field(repr=False)  # its model id, and its rows for pq rescoring

  def search(self, queries, k: int, model_id: str, nprobe: int = 16,
             candidates: int = 1000) -> Dict[str, np.ndarray]:
    """Approximate top-``k``, as `Gallery.search` returns it. ``nprobe``: the
    lists an ``ivf`` index scans; ``candidates``: how many a ``pq`` index
    shortlists per query for exact rescoring (at least ``k``)."""
    q = self.gallery._check(queries, model_id)
    features = self.gallery.features
    k = min(k, len(features))
    if self.kind == 'ivf':
      self.faiss_index.nprobe = nprobe
      scores, index = self.faiss_index.search(q, k)
      return {'index': index.astype(np.int64), 'distance': 1.0 - scores}
    _, shortlist = self.faiss_index.search(q, min(max(k, candidates), len(features)))
    shortlist = shortlist.astype(np.int64)
    # Exact, a query at a time: its candidates' rows gathered, one matrix-vector
    # product (8x faster here than one gather and einsum over the batch).
    scores = np.array([features[rows] @ v for rows, v in zip(shortlist, q)],
                      np.float32).reshape(shortlist.shape)
    order = np.lexsort((shortlist, -scores), axis=1)[:, :k]  # by score, then gallery row
    return {'index': np.take_along_axis(shortlist, order, 1),
            'distance': 1.0 - np.take_along_axis(scores, order, 1)}


def _has_accelerator() -> bool:
  return jax.default_backend() != 'cpu'


@functools.partial(jax.jit, static_argnums=2)
def _block_top_k(q, rows, k: int):
  """(scores, rows) of each query's k largest inner products with ``rows``."""
  return jax.lax.top_k(q @ rows.T, k)


def recall_at(approximate: np.ndarray, exact: np.ndarray) -> float:
  """Mean share of each query's exact top-k found in its approximate top-k."""
  k = exact.shape[1]
  return float(np.mean([len(set(a) & set(e)) / k for a, e in zip(approximate, exact)]))

