"""Results -> scalars for logs, markdown tables, results.json / .md, feature export."""

from __future__ import annotations

from typing import Dict

import numpy as np

from i2v_jax import atomic
from i2v_jax.eval_tables import METRICS
from i2v_jax.run_folder import RunFolder


def scalar_metrics(results: Dict[str, Dict[str, object]]) -> Dict[str, float]:
  """Flat {'i2v/mAP': %, 'i2v/rank1': %, ...} for logs and best-checkpoint choice."""
  out = {}
  for p, r in results.items():
    for k in (1, 5, 10, 20):
      if k <= len(r['cmc']):
        out[f'{p}/rank{k}'] = 100.0 * float(r['cmc'][k - 1])
    for name in METRICS:
      out[f'{p}/{name}'] = 100.0 * r[name]
  return out


def results_table(results: Dict[str, Dict[str, object]], title: str = '') -> str:
  """Markdown table: Rank-1/5/10/20 and every metric (mAP, mINP, ...) in %, and query counts."""
  ranks = [k for k in (1, 5, 10, 20) if all(k <= len(r['cmc']) for r in results.values())]
  head = ['protocol'] + [f'R{k}' for k in ranks] + list(METRICS) + ['queries', 'skipped']
  lines = ([f'### {title}', ''] if title else []) + [
      '| ' + ' | '.join(head) + ' |', '|' + ' --- |' * len(head)]
  for p, r in results.items():
    cells = ([p] + [f'{100 * r["cmc"][k - 1]:.2f}' for k in ranks]
             + [f'{100 * r[name]:.2f}' for name in METRICS]
             + [str(r['num_valid_queries']), str(r['num_skipped_queries'])])
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def write_results(results: Dict[str, Dict[str, object]], workdir: str, *, step: int,
                  title: str = '') -> None:
  """``results.json`` and ``results.md`` in the workdir (each written whole, then renamed)."""
  summary = {'step': step, 'protocols': {
      p: {'cmc': [float(x) for x in r['cmc']], **{name: r[name] for name in METRICS},
          'num_valid_queries': r['num_valid_queries'],
          'num_skipped_queries': r['num_skipped_queries']} for p, r in results.items()}}
  run = RunFolder(workdir)
  atomic.write_json(summary, run.results_json)
  atomic.write_text(results_table(results, title), run.results_md)


def export_features(features: Dict[str, Dict[str, np.ndarray]], workdir: str) -> list:
  """One ``features-<split>-<kind>.npz`` (features, pids, camids, names) per entry."""
  paths = []
  for key, entry in features.items():
    path = RunFolder(workdir).features(key)
    atomic.write_npz(path, **entry)
    paths.append(path)
  return paths
