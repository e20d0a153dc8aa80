r"""Gallery search at scale: exact (blocked) and approximate (FAISS IVF, PQ) against plain numpy.

    python bench/gallery_search.py [--sizes 10000,100000,1000000] [--dim 2048]
        [--noise 1.2] [--queries 1000] [--batch 256] [--indexes ivf,pq] [--nlist 1024]
        [--nprobe 16,64,256] [--pq_dims 4,8] [--candidates 10,100,1000]
        [--train_size 100000] [--runs 3]

Galleries of L2-normalised 2048-d embeddings with identity structure (10
tracklets an identity: a centre plus --noise standard deviations of noise a
dimension, so two tracklets of one identity have a cosine of about
1 / (1 + noise^2)), queries drawn the same way from the gallery's identities.
Per size, in one process: plain numpy (the whole query-batch x gallery score
matrix, then a full argsort of each row), the exact blocked search of
`i2v_jax.gallery.Gallery.search`, and the approximate indexes of
`Gallery.index`: ``ivf`` (FAISS IndexIVFFlat; per --nprobe) and ``pq`` (FAISS
IndexPQFastScan, 4-bit codes of each --pq_dims dimensions, then exact
rescoring; per --candidates): build time, memory, search latency and recall@10
against the exact result. Latency per query is the batch's time / its queries
(batched); queries/s is the inverse. Median of --runs.
"""

import argparse
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from i2v_jax.gallery import Gallery, recall_at  # noqa: E402


def embeddings(n: int, dim: int, ids: int, seed: int, noise: float = 1.2,
               chunk: int = 50_000) -> np.ndarray:
  """(n, dim) float32 unit rows: identity centre (row // 10 mod ids) + noise."""
  rng = np.random.default_rng(seed)
  centres = np.random.default_rng(1234).standard_normal((ids, dim), dtype=np.float32)
  out = np.empty((n, dim), np.float32)
  for s in range(0, n, chunk):
    rows = np.arange(s, min(n, s + chunk))
    block = centres[(rows // 10) % ids] + noise * rng.standard_normal((len(rows), dim),
                                                                      dtype=np.float32)
    out[s:s + len(rows)] = block / np.linalg.norm(block, axis=1, keepdims=True)
  return out


def timed(fn, runs: int):
  times, out = [], None
  for _ in range(runs):
    t = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times), out


def numpy_search(queries, gallery, k):
  scores = queries @ gallery.T
  return np.argsort(-scores, axis=1, kind='stable')[:, :k]


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--sizes', default='10000,100000,1000000')
  p.add_argument('--dim', type=int, default=2048)
  p.add_argument('--noise', type=float, default=1.2, help='noise a dimension (centres: 1)')
  p.add_argument('--indexes', default='ivf,pq', help='approximate indexes, comma-separated')
  p.add_argument('--pq_dims', default='4,8', help='dimensions a pq code covers, comma-separated')
  p.add_argument('--candidates', default='10,100,1000',
                 help='pq shortlists rescored exactly, comma-separated')
  p.add_argument('--queries', type=int, default=1000)
  p.add_argument('--batch', type=int, default=256)
  p.add_argument('--nlist', type=int, default=1024)
  p.add_argument('--nprobe', default='16,64,256', help='lists visited, comma-separated')
  p.add_argument('--train_size', type=int, default=100_000, help='k-means sample for the IVF')
  p.add_argument('--runs', type=int, default=3)
  p.add_argument('--k', type=int, default=10)
  args = p.parse_args()
  try:
    import faiss
    have_faiss = True
    faiss_version = faiss.__version__
  except ImportError:
    have_faiss, faiss_version = False, None
  print(f'{args.dim}-d, noise {args.noise}, {args.queries} queries in batches of '
        f'{args.batch}, k={args.k}, numpy {np.__version__}, faiss '
        f'{faiss_version or "not installed"}, {os.cpu_count()} CPUs', flush=True)
  for size in (int(s) for s in args.sizes.split(',')):
    print(bench_size(size, args, have_faiss), flush=True)


def bench_size(size: int, args, have_faiss: bool) -> str:
  """One gallery size: the line of figures."""
  ids = max(1, size // 10)
  gallery = embeddings(size, args.dim, ids, seed=1, noise=args.noise)
  g = Gallery(gallery, np.arange(size), np.zeros(size, np.int32), 'bench')  # unit rows already
  queries = embeddings(args.queries, args.dim, ids, seed=2, noise=args.noise)
  batches = [queries[s:s + args.batch] for s in range(0, len(queries), args.batch)]
  one = batches[0]
  t_numpy, want = timed(lambda: numpy_search(one, gallery, args.k), args.runs)
  t_exact, got = timed(lambda: g.search(one, args.k, 'bench')['index'], args.runs)
  exact_all = np.concatenate([g.search(b, args.k, 'bench')['index'] for b in batches])
  assert recall_at(got, want) > 0.999, 'exact search disagrees with numpy'
  line = (f'G={size:>9,}: numpy {1e3 * t_numpy / len(one):7.2f} ms/query, exact (blocked) '
          f'{1e3 * t_exact / len(one):7.2f} ms/query ({len(one) / t_exact:7.1f} q/s, '
          f'{t_numpy / t_exact:.1f}x numpy)')
  if not have_faiss:
    return line + '; FAISS not installed: no index'
  for kind in args.indexes.split(','):
    for dims in (args.pq_dims.split(',') if kind == 'pq' else ['']):
      line += approximate(kind, g, one, batches, exact_all, args, int(dims or 0))
  return line


def approximate(kind: str, g: Gallery, one, batches, exact_all, args, dims: int) -> str:
  """One index over ``g`` (``dims``: a pq code's): its build, memory, and per
  setting latency and recall."""
  rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  t = time.perf_counter()
  index = g.index(kind, nlist=args.nlist, train_size=args.train_size,
                  **({'dims_per_code': dims} if kind == 'pq' else {}))
  build = time.perf_counter() - t
  rss = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
  size = len(g.features)
  if kind == 'ivf':
    name, settings = f'IVF{min(args.nlist, size // 39)}', ('nprobe', args.nprobe)
    held = index.faiss_index.ntotal * args.dim * 4 / 2 ** 20  # the rows, copied
  else:
    name, settings = f'PQ{args.dim // dims}x4fs', ('candidates', args.candidates)
    held = index.faiss_index.ntotal * args.dim // dims / 2 / 2 ** 20  # 4 bits a code
  line = (f'\n  {name}: build {build:.1f} s, holds {held:,.0f} MiB (peak RSS +{rss:,.0f} MiB)')
  for value in (int(v) for v in settings[1].split(',')):
    search = lambda q, value=value: index.search(q, args.k, 'bench', **{settings[0]: value})
    t_index, _ = timed(lambda search=search: search(one), args.runs)
    approx = np.concatenate([search(b)['index'] for b in batches])
    line += (f'\n    {settings[0]}={value:5d}: {1e3 * t_index / len(one):7.3f} ms/query '
             f'({len(one) / t_index:8.1f} q/s), recall@{args.k} '
             f'{recall_at(approx, exact_all):.3f}')
  return line


if __name__ == '__main__':
  main()
