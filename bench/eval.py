r"""Evaluation speed and memory: features -> CMC/mAP/mINP for a MARS-size I2V problem.

    python bench/eval.py [--runs 5] [--dim 2048] [--query_block 256]

1,980 queries x 11,310 gallery tracklets with MARS's real pids and cameras (from
../shared/data/mars_info when present; otherwise random labels of the same sizes),
random 2048-d features with identity structure. Two implementations, each in its
own child process so peak memory is measured separately:

  device   `i2v_jax.evaluation.blocked_metrics`: distances, sort and metrics on the
           default JAX backend, query_block queries at a time
  numpy    the straightforward way: the whole (Q, G) cosine distance matrix in
           numpy, then `reference_metrics` (argsort of the full matrix, a loop over queries)

Prints the median wall time over --runs runs (after one warm-up, which includes
compilation), the speed-up, the peak resident memory of each child above an
idle child that only imported the same modules, and that both give the same mAP.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
MARS = os.path.join(REPO, '..', 'shared', 'data', 'mars_info')


def problem(dim: int, seed: int = 0, noise: float = 4.0):
  """Labels of the MARS protocol; features = identity centre + noise (mAP well below 100)."""
  import numpy as np
  rng = np.random.default_rng(seed)
  if os.path.isdir(MARS):
    from data_prep import mars
    load = lambda f, k: mars.load_mat(os.path.join(MARS, f), k)
    train = load('tracks_train_info.mat', 'track_train_info')
    test = load('tracks_test_info.mat', 'track_test_info')
    rows = mars.protocol_rows(train, test, load('query_IDX.mat', 'query_IDX'))
    qp, qc = test[rows['query'], 2], test[rows['query'], 3]
    gp, gc = test[rows['gallery'], 2], test[rows['gallery'], 3]
    source = 'real MARS protocol'
  else:
    qp, qc = rng.integers(1, 1500, 1980), rng.integers(1, 7, 1980)
    gp, gc = rng.integers(0, 1500, 11310), rng.integers(1, 7, 11310)
    source = 'random labels (../shared/data not found)'
  centers = rng.normal(size=(int(max(qp.max(), gp.max())) + 2, dim)).astype(np.float32)
  qf = centers[qp + 1] + noise * rng.normal(size=(len(qp), dim)).astype(np.float32)
  gf = centers[gp + 1] + noise * rng.normal(size=(len(gp), dim)).astype(np.float32)
  return qf, gf, qp, gp, qc, gc, source


def child(impl: str, runs: int, dim: int, query_block: int) -> dict:
  import numpy as np
  import jax
  from i2v_jax.evaluation import metrics
  qf, gf, qp, gp, qc, gc, source = problem(dim)
  idle_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

  def device():
    return metrics.blocked_metrics(qf, gf, q_pids=qp, g_pids=gp, q_camids=qc, g_camids=gc,
                                   query_block=query_block)

  def straightforward():
    norm = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    dist = 1.0 - norm(qf.astype(np.float64)) @ norm(gf.astype(np.float64)).T
    return metrics.reference_metrics(dist, qp, gp, qc, gc)

  fn = device if impl == 'device' else straightforward
  times, out = [], None
  for i in range(runs + 1):
    t0 = time.perf_counter()
    out = fn()
    if i:
      times.append(time.perf_counter() - t0)
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  stats = None
  if impl == 'device':
    stats = jax.devices()[0].memory_stats()
  return {'median_s': statistics.median(times), 'runs': runs, 'mAP': out['mAP'],
          'peak_rss_mib': peak / 1024, 'above_idle_mib': (peak - idle_rss) / 1024,
          'device': str(jax.devices()[0].device_kind), 'backend': jax.default_backend(),
          'device_peak_mib': (stats or {}).get('peak_bytes_in_use', 0) / 2 ** 20,
          'source': source}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--runs', type=int, default=5)
  parser.add_argument('--dim', type=int, default=2048)
  parser.add_argument('--query_block', type=int, default=256)
  parser.add_argument('--child', choices=['device', 'numpy'])
  args = parser.parse_args()
  if args.child:
    print(json.dumps(child(args.child, args.runs, args.dim, args.query_block)))
    return
  results = {}
  for impl in ('device', 'numpy'):
    out = subprocess.run([sys.executable, __file__, '--child', impl, '--runs', str(args.runs),
                          '--dim', str(args.dim), '--query_block', str(args.query_block)],
                         check=False, capture_output=True, text=True)
    if out.returncode:  # the child's own error, not only its exit status
      raise SystemExit(f'bench/eval.py, {impl} child failed:\n{out.stderr.strip()[-3000:]}')
    results[impl] = json.loads(out.stdout.strip().splitlines()[-1])
  d, n = results['device'], results['numpy']
  print(f'I2V 1980 x 11310, {args.dim}-d features ({d["source"]}); median of {args.runs} runs')
  print(f'device ({d["backend"]}: {d["device"]}), query_block={args.query_block}: '
        f'{d["median_s"]:.3f} s, peak RSS {d["peak_rss_mib"]:.0f} MiB '
        f'(+{d["above_idle_mib"]:.0f} over idle)'
        + (f', device peak {d["device_peak_mib"]:.0f} MiB' if d['device_peak_mib'] else ''))
  print(f'numpy (full distance matrix + rank_metrics): {n["median_s"]:.3f} s, '
        f'peak RSS {n["peak_rss_mib"]:.0f} MiB (+{n["above_idle_mib"]:.0f} over idle)')
  print(f'speed-up {n["median_s"] / d["median_s"]:.1f}x; '
        f'mAP device {100 * d["mAP"]:.4f} vs numpy {100 * n["mAP"]:.4f}')


if __name__ == '__main__':
  main()
