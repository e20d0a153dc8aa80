r"""Evaluation speed and memory: features -> CMC/mAP/mINP for a MARS-size I2V problem.

    python bench/eval.py [--runs 5] [--dim 2048] [--query_block 256] [--torchreid_runs 1]

1,980 queries x 11,310 gallery tracklets with MARS's real pids and cameras (from
../shared/data/mars_info when present; otherwise random labels of the same sizes),
random 2048-d features with identity structure. Each implementation runs in its
own child process, so peak memory is measured separately:

  distances  the distance matrix alone, block by block as `blocked_metrics`
             computes it (XLA, float32): the floor it pays
  numpy_distances  the same with numpy's float32 product (faster on some CPUs;
             not used: it rounds differently from XLA, which moves near-tied ranks)
  ranks      `i2v_jax.evaluation.blocked_metrics` as evaluation runs it:
             distances, then each query's true matches' ranks, no sort
  sort       the previous way: distances (XLA), then a stable argsort of every
             block's rows and the metrics over the sorted rows
  numpy      the whole (Q, G) float64 matrix in numpy and `reference_metrics`
  torchreid  torchreid's python evaluation (`eval_market1501`'s loop as its
             rank.py has it: argsort of the whole matrix, then per query junk
             removal, CMC, AP over a Python list of precisions, INP)

Prints the median wall time of each over --runs runs (after one warm-up, which
includes compilation; torchreid: --torchreid_runs runs, no warm-up, it is
minutes), the ratios, the peak resident memory above an idle child, and that
all give the same mAP.
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
IMPLS = ('distances', 'numpy_distances', 'ranks', 'sort', 'numpy', 'torchreid')


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


def torchreid_eval(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
  """torchreid's python `eval_market1501` (metrics/rank.py), step for step:
  standard AP, CMC and mINP; its numbers are `reference_metrics(ap_mode='standard')`'s."""
  import numpy as np
  num_q, num_g = distmat.shape
  indices = np.argsort(distmat, axis=1)
  matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
  all_cmc, all_ap, all_inp = [], [], []
  for q_idx in range(num_q):
    order = indices[q_idx]
    remove = (g_pids[order] == q_pids[q_idx]) & (g_camids[order] == q_camids[q_idx])
    raw_cmc = matches[q_idx][np.invert(remove)]
    if not np.any(raw_cmc):
      continue
    cmc = raw_cmc.cumsum()
    pos_idx = np.where(raw_cmc == 1)
    all_inp.append(cmc[np.max(pos_idx)] / (np.max(pos_idx) + 1.0))
    cmc[cmc > 1] = 1
    all_cmc.append(cmc[:max_rank])
    num_rel = raw_cmc.sum()
    tmp_cmc = raw_cmc.cumsum()
    tmp_cmc = [x / (i + 1.) for i, x in enumerate(tmp_cmc)]
    all_ap.append((np.asarray(tmp_cmc) * raw_cmc).sum() / num_rel)
  return {'mAP': float(np.mean(all_ap)), 'mINP': float(np.mean(all_inp)),
          'cmc': np.asarray(all_cmc).astype(np.float32).sum(0) / len(all_cmc)}


def sort_path(qf, gf, qp, gp, qc, gc, query_block, ap_mode):
  """The metrics as computed before the match-rank path: each block's rows sorted
  (numpy stable argsort on the CPU backend), then (b, G) arrays in distance order."""
  import numpy as np
  import jax.numpy as jnp
  from i2v_jax.evaluation import metrics
  gallery = jnp.asarray(gf)
  aps = []
  for s in range(0, len(qp), query_block):
    sl = slice(s, s + query_block)
    pad = lambda x: np.concatenate([x, np.repeat(x[-1:], query_block - len(x), axis=0)]) \
        if len(x) < query_block else x
    n = len(qp[sl])
    dist = np.asarray(metrics._block_distances(pad(qf[sl]), gallery, metric='cosine'))
    order = np.argsort(dist, axis=1, kind='stable')
    hit = gp[order] == pad(qp[sl])[:, None]
    keep = ~(hit & (gc[order] == pad(qc[sl])[:, None]))
    good = hit & keep
    ranked = {'good': good, 'rank': np.cumsum(keep, axis=1).astype(np.float32),
              'hits': np.cumsum(good, axis=1).astype(np.float32)}
    ranked['n'] = ranked['hits'][:, -1]
    stats = metrics._scores(ranked, ap_mode, ('mAP',), np)
    aps.append(np.where(stats['num_hits'] > 0, stats['mAP'], np.nan)[:n])
  return {'mAP': float(np.nanmean(np.concatenate(aps)))}


def child(impl: str, runs: int, dim: int, query_block: int) -> dict:
  import numpy as np
  import jax
  import jax.numpy as jnp
  from i2v_jax.evaluation import metrics
  qf, gf, qp, gp, qc, gc, source = problem(dim)
  idle_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  norm = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)

  def distances():  # as `blocked_metrics` computes them (XLA, 256 queries a block)
    gallery = jnp.asarray(gf)
    for s in range(0, len(qp), query_block):
      block = qf[s:s + query_block]
      if len(block) < query_block:
        block = np.concatenate([block, np.repeat(block[-1:], query_block - len(block), 0)])
      np.asarray(metrics._block_distances(block, gallery, metric='cosine'))
    return {'mAP': float('nan')}

  def numpy_distances():  # numpy's float32 product, gallery normalised once
    from i2v_jax.distances import l2_normalize
    gallery = l2_normalize(gf, xp=np)
    for s in range(0, len(qp), query_block):
      _ = 1.0 - l2_normalize(qf[s:s + query_block], xp=np) @ gallery.T
    return {'mAP': float('nan')}

  fns = {
      'distances': distances,
      'numpy_distances': numpy_distances,
      'ranks': lambda: metrics.blocked_metrics(qf, gf, q_pids=qp, g_pids=gp, q_camids=qc,
                                               g_camids=gc, query_block=query_block),
      'sort': lambda: sort_path(qf, gf, qp, gp, qc, gc, query_block, 'trapezoid'),
      'numpy': lambda: metrics.reference_metrics(
          1.0 - norm(qf.astype(np.float64)) @ norm(gf.astype(np.float64)).T, qp, gp, qc, gc),
      'torchreid': lambda: torchreid_eval(
          (1.0 - norm(qf) @ norm(gf).T).astype(np.float32), qp, gp, qc, gc),
  }
  times, out = [], None
  for i in range(runs + (impl != 'torchreid')):
    t0 = time.perf_counter()
    out = fns[impl]()
    if i or impl == 'torchreid':
      times.append(time.perf_counter() - t0)
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return {'median_s': statistics.median(times), 'runs': runs, 'mAP': out['mAP'],
          'peak_rss_mib': peak / 1024, 'above_idle_mib': (peak - idle_rss) / 1024,
          'device': str(jax.devices()[0].device_kind), 'backend': jax.default_backend(),
          'source': source}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--runs', type=int, default=5)
  parser.add_argument('--torchreid_runs', type=int, default=1)
  parser.add_argument('--dim', type=int, default=2048)
  parser.add_argument('--query_block', type=int, default=256)
  parser.add_argument('--only', default=','.join(IMPLS), help='comma-separated subset')
  parser.add_argument('--child', choices=IMPLS)
  args = parser.parse_args()
  if args.child:
    runs = args.torchreid_runs if args.child == 'torchreid' else args.runs
    print(json.dumps(child(args.child, runs, args.dim, args.query_block)))
    return
  results = {}
  for impl in args.only.split(','):
    out = subprocess.run([sys.executable, __file__, '--child', impl, '--runs', str(args.runs),
                          '--torchreid_runs', str(args.torchreid_runs), '--dim', str(args.dim),
                          '--query_block', str(args.query_block)],
                         check=False, capture_output=True, text=True)
    if out.returncode:  # the child's own error, not only its exit status
      raise SystemExit(f'bench/eval.py, {impl} child failed:\n{out.stderr.strip()[-3000:]}')
    results[impl] = r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f'{impl:10s} {r["median_s"]:8.3f} s (median of {r["runs"]}), peak RSS '
          f'{r["peak_rss_mib"]:.0f} MiB (+{r["above_idle_mib"]:.0f} over idle), '
          f'mAP {100 * r["mAP"]:.4f}', flush=True)
  first = next(iter(results.values()))
  print(f'I2V 1980 x 11310, {args.dim}-d features ({first["source"]}), JAX '
        f'{first["backend"]} ({first["device"]}), query_block={args.query_block}')
  if 'ranks' in results:
    ranks = results['ranks']['median_s']
    for other in ('sort', 'numpy', 'torchreid'):
      if other in results:
        print(f'ranks is {results[other]["median_s"] / ranks:.1f}x {other}')
    if 'distances' in results:
      print(f'ranks takes {ranks / results["distances"]["median_s"]:.2f}x the distances alone')
    if 'numpy_distances' in results:
      print(f'ranks takes {ranks / results["numpy_distances"]["median_s"]:.2f}x numpy\'s '
            'distance matrix alone')


if __name__ == '__main__':
  main()
