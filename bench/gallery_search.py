r"""Gallery search at scale: exact (blocked) and approximate (FAISS IVF) against plain numpy.

    python bench/gallery_search.py [--sizes 10000,100000,1000000] [--dim 2048]
        [--queries 1000] [--batch 256] [--nlist 1024] [--nprobe 16] [--train_size 100000]
        [--runs 3]

Galleries of L2-normalised 2048-d embeddings with identity structure (10
tracklets an identity: a centre plus noise), queries drawn the same way from
the gallery's identities. Per size, in one process: plain numpy (the whole
query-batch x gallery score matrix, then a full argsort of each row), the exact
blocked search of `i2v_jax.gallery.Gallery.search`, and FAISS's IndexIVFFlat
(inner product; build time, its memory, then per --nprobe the search latency and
recall@10 against the exact result). Latency per query is the batch's time / its queries
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


def embeddings(n: int, dim: int, ids: int, seed: int, chunk: int = 50_000) -> np.ndarray:
  """(n, dim) float32 unit rows: identity centre (row // 10 mod ids) + noise."""
  rng = np.random.default_rng(seed)
  centres = np.random.default_rng(1234).standard_normal((ids, dim), dtype=np.float32)
  out = np.empty((n, dim), np.float32)
  for s in range(0, n, chunk):
    rows = np.arange(s, min(n, s + chunk))
    block = centres[(rows // 10) % ids] + 1.2 * rng.standard_normal((len(rows), dim),
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
  print(f'{args.dim}-d, {args.queries} queries in batches of {args.batch}, k={args.k}, '
        f'numpy {np.__version__}, faiss {faiss_version or "not installed"}, '
        f'{os.cpu_count()} CPUs', flush=True)
  for size in (int(s) for s in args.sizes.split(',')):
    print(bench_size(size, args, have_faiss), flush=True)


def bench_size(size: int, args, have_faiss: bool) -> str:
  """One gallery size: the line of figures."""
  ids = max(1, size // 10)
  gallery = embeddings(size, args.dim, ids, seed=1)
  g = Gallery(gallery, np.arange(size), np.zeros(size, np.int32), 'bench')  # unit rows already
  queries = embeddings(args.queries, args.dim, ids, seed=2)
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
  rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  t = time.perf_counter()
  index = g.index('ivf', nlist=args.nlist, train_size=args.train_size)
  build = time.perf_counter() - t
  memory = index.faiss_index.ntotal * args.dim * 4 / 2 ** 20
  rss = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
  line += (f'; IVF{min(args.nlist, size // 39)}: build {build:.1f} s, vectors '
           f'{memory:,.0f} MiB (peak RSS +{rss:,.0f} MiB)')
  for nprobe in (int(v) for v in args.nprobe.split(',')):
    t_ivf, _ = timed(lambda nprobe=nprobe: index.search(one, args.k, 'bench', nprobe=nprobe),
                     args.runs)
    approx = np.concatenate([index.search(b, args.k, 'bench', nprobe=nprobe)['index']
                             for b in batches])
    line += (f'\n    nprobe={nprobe:4d}: {1e3 * t_ivf / len(one):7.3f} ms/query '
             f'({len(one) / t_ivf:8.1f} q/s), recall@{args.k} {recall_at(approx, exact_all):.3f}')
  return line


if __name__ == '__main__':
  main()
