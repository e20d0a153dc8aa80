"""Results -> scalars for logs, markdown tables, results.json / .md, feature export."""

from __future__ import annotations

from typing import Dict, Optional

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


def results_table(results: Dict[str, Dict[str, object]], title: str = '',
                  values: Optional[Dict[str, Dict[str, float]]] = None) -> str:
  """Markdown table: Rank-1/5/10/20 and every metric (mAP, mINP, ...) in %, and
  query counts; then, when other evaluators returned ``values``, one row per
  ``<evaluator>/<metric>``."""
  ranks = [k for k in (1, 5, 10, 20) if all(k <= len(r['cmc']) for r in results.values())]
  head = ['protocol'] + [f'R{k}' for k in ranks] + list(METRICS) + ['queries', 'skipped']
  lines = ([f'### {title}', ''] if title else []) + [
      '| ' + ' | '.join(head) + ' |', '|' + ' --- |' * len(head)]
  for p, r in results.items():
    cells = ([p] + [f'{100 * r["cmc"][k - 1]:.2f}' for k in ranks]
             + [f'{100 * r[name]:.2f}' for name in METRICS]
             + [str(r['num_valid_queries']), str(r['num_skipped_queries'])])
    lines.append('| ' + ' | '.join(cells) + ' |')
  if values:
    lines += ['', '| measurement | value |', '| --- | --- |']
    lines += [f'| {name}/{k} | {v:.4f} |' for name, named in values.items()
              for k, v in named.items()]
  return '\n'.join(lines) + '\n'


def write_results(results: Dict[str, Dict[str, object]], workdir: str, *, step: int,
                  title: str = '', values: Optional[Dict[str, Dict[str, float]]] = None
                  ) -> None:
  """``results.json`` and ``results.md`` in the workdir (each written whole, then
  renamed); the other evaluators' ``values`` under 'evaluators' when there are any."""
  summary = {'step': step, 'protocols': {
      p: {'cmc': [float(x) for x in r['cmc']], **{name: r[name] for name in METRICS},
          'num_valid_queries': r['num_valid_queries'],
          'num_skipped_queries': r['num_skipped_queries']} for p, r in results.items()}}
  if values:
    summary['evaluators'] = {name: {k: float(v) for k, v in named.items()}
                             for name, named in values.items()}
  run = RunFolder(workdir)
  atomic.write_json(summary, run.results_json)
  atomic.write_text(results_table(results, title, values), run.results_md)


def export_features(features: Dict[str, Dict[str, np.ndarray]], workdir: str) -> list:
  """One ``features-<split>-<kind>.npz`` (features, pids, camids, names) per entry."""
  paths = []
  for key, entry in features.items():
    path = RunFolder(workdir).features(key)
    atomic.write_npz(path, **entry)
    paths.append(path)
  return paths
