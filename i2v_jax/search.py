"""Search a folder of tracklets (or images), or an encoded gallery file, with query images.

    python -m i2v_jax.search --workdir=runs/mdkt_mars --query=probe.jpg \\
        --gallery=camera_7/ --top=10 [--export] [--rerank] [--save_gallery=city.npz]
    python -m i2v_jax.search --workdir=runs/mdkt_mars --query=probe.jpg \\
        --gallery=city.npz [--index=exact|ivf|pq] [--nprobe=64] [--candidates=1000]

``--query``: one image, or a folder of images (each one query). ``--gallery``: a
folder of tracklet folders (each subfolder one tracklet, its frames in file-name
order), searched with the network evaluation uses for videos; or a folder of
images (each one gallery entry), searched with the image network (as I2I). The
run's ``i2v_jax.load`` networks embed both sides exactly as evaluation does, and
the run's ``eval.distance`` ranks them (with ``--rerank``, k-reciprocal
re-ranking with the run's ``eval.rerank_*`` settings). It prints the top-k
gallery entries per query with their distances and writes, under
``--output_dir`` (default ``<workdir>/search``), ``ranked.png`` (each query with
its top-k, labelled with names and distances; no identities are known, so
borders are grey) and, with ``--export``, ``features.npz`` (query_names,
query_features, gallery_names, gallery_features, distances).

A gallery encoded once is kept as a file (`i2v_jax.gallery.Gallery`: features,
names, cameras and the id of the weights that encoded it): ``--save_gallery``
writes the searched folder's, and ``--gallery=<file>`` searches one without
encoding it again, exactly (in blocks, on the accelerator when JAX has one) or
through a FAISS index (``pip install faiss-cpu``; built at each search: keep it
in memory with the Python API for many): ``--index=ivf``, an inverted file
(``--nprobe`` lists scanned), or ``--index=pq``, every row scanned as a 4-bit
code and the ``--candidates`` best rescored exactly (`i2v_jax.gallery`). A file
encoded by other weights than ``--workdir``'s ``--checkpoint`` is refused, and so
is a run that ranks by euclidean distance (the file ranks by cosine). A file
holds no frames, so such a search prints and exports (``query_names``,
``query_features``, ``top_names``, ``top_distances``) but draws no picture and
cannot re-rank.
"""

from __future__ import annotations

import os
import sys
from typing import List, Optional, Sequence, Tuple

import numpy as np

from i2v_jax import command_line
from i2v_jax.errors import UserError

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp')


class SearchError(UserError):
  """A query or gallery path that holds nothing to search."""


def _images(folder: str) -> List[str]:
  return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                if n.lower().endswith(IMAGE_SUFFIXES)
                and os.path.isfile(os.path.join(folder, n)))


def query_images(path: str) -> List[str]:
  """The query image files: ``path`` itself or the images in that folder."""
  if os.path.isfile(path):
    return [path]
  if not os.path.isdir(path):
    raise SearchError(f'--query={path}: no such file or folder; pass an image or a folder '
                      'of images')
  found = _images(path)
  if not found:
    raise SearchError(f'--query={path}: the folder holds no images '
                      f'({"/".join(s[1:] for s in IMAGE_SUFFIXES)}); pass an image or a '
                      'folder of images')
  return found


def gallery_entries(path: str) -> Tuple[str, List[str], List[List[str]]]:
  """('video', names, frame files per tracklet) for a folder of tracklet folders, or
  ('image', names, [[file]] per image) for a folder of images."""
  if not os.path.isdir(path):
    raise SearchError(f'--gallery={path}: not a folder; pass a folder of tracklet folders '
                      'or of images')
  subfolders = sorted(n for n in os.listdir(path) if os.path.isdir(os.path.join(path, n)))
  tracklets = [(n, _images(os.path.join(path, n))) for n in subfolders]
  tracklets = [(n, frames) for n, frames in tracklets if frames]
  if tracklets:
    return 'video', [n for n, _ in tracklets], [frames for _, frames in tracklets]
  images = _images(path)
  if not images:
    raise SearchError(f'--gallery={path}: holds neither tracklet folders with images nor '
                      'images; pass a folder of tracklet folders or of images')
  return 'image', [os.path.basename(f) for f in images], [[f] for f in images]


def rank(model, queries: np.ndarray, gallery: np.ndarray, rerank: bool = False) -> np.ndarray:
  """(Q, G) distances as evaluation computes them for this run (``eval.distance``,
  and with ``rerank`` the run's k-reciprocal re-ranking)."""
  ev = model.config.eval
  if rerank:
    from i2v_jax.evaluation.protocols import reranked_distances
    return reranked_distances(ev, queries, gallery)
  from i2v_jax.distances import pairwise_distance
  return pairwise_distance(queries.astype(np.float64), gallery.astype(np.float64),
                           ev.distance, xp=np)


class _Files:
  """`visualize.render`'s reader over image files: frames(row) -> the files' bytes."""

  def __init__(self, files: Sequence[Sequence[str]]):
    self.files = files

  def frames(self, row: int) -> List[bytes]:
    out = []
    for name in self.files[row]:
      with open(name, 'rb') as f:
        out.append(f.read())
    return out


INDEXES = ('exact', 'ivf', 'pq')


def search(workdir: str, query: str, gallery: str, *, checkpoint: str = 'best', top: int = 10,
           output_dir: str = '', export: bool = False, rerank: bool = False,
           save_gallery: str = '', index: str = 'exact', nprobe: int = 16,
           candidates: int = 1000, verbose: bool = True) -> dict:
  """Runs a search; returns {'query_names', 'gallery_names', 'gallery_kind'
  ('video', 'image' or 'file'), 'distances' (Q, G; None for a gallery file),
  'ranked' [[(gallery row, distance)] per query], 'paths'}."""
  if top < 1:
    raise SearchError(f'--top={top}: must be at least 1')
  if index not in INDEXES:
    raise SearchError(f'--index={index}: choose one of {", ".join(INDEXES)}')
  queries = query_images(query)
  from_file = os.path.isfile(gallery)
  if from_file and (rerank or save_gallery):
    raise SearchError(f'--gallery={gallery} is an encoded gallery file: '
                      f'{"--rerank" if rerank else "--save_gallery"} needs the gallery\'s '
                      'frames; pass its folder instead')
  if index != 'exact' and not from_file:
    raise SearchError(f'--index={index} searches an encoded gallery file; make one with '
                      '--save_gallery=FILE, then pass it as --gallery')
  import i2v_jax
  from i2v_jax.gallery import Gallery
  stored = Gallery.load(gallery) if from_file else None
  kind, names, frames = ('file', list(stored.names), None) if from_file else \
      gallery_entries(gallery)
  model = i2v_jax.load(workdir, checkpoint=checkpoint)
  if (from_file or save_gallery) and model.config.eval.distance != 'cosine':
    raise SearchError(f'{workdir} ranks by {model.config.eval.distance} distance; a gallery '
                      'file ranks by cosine: search the folder instead')
  q = model.embed_images(queries)
  out = {'query_names': [os.path.basename(p) for p in queries], 'gallery_names': names,
         'gallery_kind': kind, 'distances': None}
  if from_file:
    searched = (stored.search(q, top, model.model_id) if index == 'exact' else
                stored.index(index).search(q, top, model.model_id, nprobe=nprobe,
                                           candidates=candidates))
    out['ranked'] = [[(int(j), float(d)) for j, d in zip(rows, dists)]
                     for rows, dists in zip(searched['index'], searched['distance'])]
    how = 'cosine distance' + {'exact': '', 'ivf': f', ivf index, nprobe {nprobe}',
                               'pq': f', pq index, {candidates} candidates rescored'}[index]
    what = f'entries of {gallery}'
  else:
    g = (model.embed_images([f[0] for f in frames]) if kind == 'image'
         else model.embed_tracklets(frames))
    out['distances'] = rank(model, q, g, rerank)
    out['ranked'] = [[(int(j), float(row[j])) for j in np.argsort(row, kind='stable')[:top]]
                     for row in out['distances']]
    how = f'{model.config.eval.distance} distance' + (', re-ranked' if rerank else '')
    what = 'tracklets' if kind == 'video' else 'images'
  log = print if verbose else (lambda *a, **k: None)
  log(f'{len(queries)} quer{"y" if len(queries) == 1 else "ies"} against {len(names)} gallery '
      f'{what} ({how}; {workdir}, checkpoint {checkpoint})')
  for name, entries in zip(out['query_names'], out['ranked']):
    log(f'{name}:')
    for r, (j, d) in enumerate(entries, start=1):
      log(f'  {r:3d}. {names[j]}  {d:.4f}')
  output_dir = output_dir or os.path.join(workdir, 'search')
  os.makedirs(output_dir, exist_ok=True)
  if from_file:
    out['paths'] = _write_file_search(out, q, output_dir, export)
  else:
    out['paths'] = _write_folder_search(out, model, q, g, queries, frames, output_dir,
                                        f'top {top} by {how}', export, log)
    if save_gallery:
      Gallery.build(g, names, [-1] * len(names), model.model_id).save(save_gallery)
      out['paths'].append(save_gallery)
  for p in out['paths']:
    log(f'wrote {p}')
  return out


def _write_file_search(out: dict, q: np.ndarray, output_dir: str, export: bool) -> List[str]:
  """With ``export``: features.npz of the queries and their top entries (a
  gallery file has no frames to draw)."""
  if not export:
    return []
  from i2v_jax import atomic
  path = os.path.join(output_dir, 'features.npz')
  names = out['gallery_names']
  atomic.write_npz(path, query_names=np.array(out['query_names']), query_features=q,
                   top_names=np.array([[names[j] for j, _ in e] for e in out['ranked']]),
                   top_distances=np.array([[d for _, d in e] for e in out['ranked']]))
  return [path]


def _write_folder_search(out: dict, model, q, g, queries, frames, output_dir: str, how: str,
                         export: bool, log) -> List[str]:
  """ranked.png, and features.npz with ``export`` (an earlier search's is removed
  without it: it would sit beside this picture)."""
  from i2v_jax import atomic
  from i2v_jax.evaluation import visualize
  picture = os.path.join(output_dir, 'ranked.png')
  inp = model.config.input
  visualize.render(
      [(i, [(j, None, d) for j, d in entries]) for i, entries in enumerate(out['ranked'])],
      _Files([[p] for p in queries]), [0] * len(queries), _Files(frames), picture,
      visualize.thumbnail_size(inp.height, inp.width),
      title=f'search: {len(out["gallery_names"])} gallery entries, {how}',
      query={'names': out['query_names']}, gallery={'names': out['gallery_names']})
  paths = [picture]
  path = os.path.join(output_dir, 'features.npz')
  if export:
    atomic.write_npz(path, query_names=np.array(out['query_names']), query_features=q,
                     gallery_names=np.array(out['gallery_names']), gallery_features=g,
                     distances=out['distances'])
    paths.append(path)
  elif os.path.exists(path):
    os.remove(path)
    log(f'removed {path} (an earlier search\'s; --export writes this one\'s)')
  return paths


def main(argv: Optional[List[str]] = None) -> int:
  from absl import flags
  fl = flags.FlagValues()
  workdir = flags.DEFINE_string('workdir', None, 'a trained run', flag_values=fl)
  query = flags.DEFINE_string('query', None, 'an image or a folder of images', flag_values=fl)
  gallery = flags.DEFINE_string('gallery', None, 'a folder of tracklet folders or of images, '
                                'or an encoded gallery file (--save_gallery)', flag_values=fl)
  checkpoint = flags.DEFINE_string('checkpoint', 'best', "'best', 'latest' or a step",
                                   flag_values=fl)
  top = flags.DEFINE_integer('top', 10, 'gallery entries shown per query', flag_values=fl)
  output_dir = flags.DEFINE_string('output_dir', '', 'default: <workdir>/search',
                                   flag_values=fl)
  export = flags.DEFINE_bool('export', False, 'also write features.npz', flag_values=fl)
  rerank = flags.DEFINE_bool('rerank', False, "k-reciprocal re-ranking (the run's eval.rerank_*)",
                             flag_values=fl)
  save_gallery = flags.DEFINE_string('save_gallery', '', 'also keep the encoded gallery '
                                     'folder as this file, to search it again as --gallery',
                                     flag_values=fl)
  index = flags.DEFINE_string('index', 'exact', f'for a gallery file: {" or ".join(INDEXES)} '
                              '(FAISS inverted file or 4-bit codes)', flag_values=fl)
  nprobe = flags.DEFINE_integer('nprobe', 16, 'lists the ivf index visits per query',
                                flag_values=fl)
  candidates = flags.DEFINE_integer('candidates', 1000, 'rows the pq index shortlists per '
                                    'query for exact rescoring', flag_values=fl)
  command_line.parse(fl, argv, __doc__)
  try:
    missing = [f'--{n}' for n, v in (('workdir', workdir), ('query', query),
                                      ('gallery', gallery)) if not v.value]
    if missing:
      raise SearchError(f'{" and ".join(missing)} required (python -m i2v_jax.search '
                        '--workdir=RUN --query=IMAGE_OR_FOLDER --gallery=FOLDER)')
    search(workdir.value, query.value, gallery.value, checkpoint=checkpoint.value,
           top=top.value, output_dir=output_dir.value, export=export.value,
           rerank=rerank.value, save_gallery=save_gallery.value, index=index.value,
           nprobe=nprobe.value, candidates=candidates.value)
  except (flags.Error, UserError) as e:
    print(f'error: {str(e).splitlines()[0]}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
