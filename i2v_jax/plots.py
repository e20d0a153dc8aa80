"""Pictures of a run, next to its ``results.md``.

    python -m i2v_jax.plots --workdir=runs/mdkt_mars

``training.png``: every ``loss/*`` term logged in ``metrics.jsonl`` over steps
(log scale; the total in black) beside each protocol's mAP and Rank-1 at every
evaluation. ``cmc.png``: the CMC curve (Rank-k for k = 1..``eval.max_rank``) of
each protocol in ``results.json``. Training writes both at its end and
evaluate mode writes ``cmc.png``; this command redraws them from any workdir.
Each file is written whole, then renamed.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Dict, List, Optional

from i2v_jax import atomic, command_line
from i2v_jax.errors import UserError
from i2v_jax.run_folder import RunFolder


def read_metrics(workdir: str) -> List[Dict[str, float]]:
  """The lines of ``metrics.jsonl`` (one JSON object each), in order; a missing
  file gives no lines."""
  path = RunFolder(workdir).metrics
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def series(lines: List[Dict[str, float]], key: str):
  """(steps, values) of ``key`` over the lines that hold it."""
  points = [(line['step'], line[key]) for line in lines if key in line]
  return [s for s, _ in points], [v for _, v in points]


def _figure(width: float, height: float, panels: int):
  import matplotlib
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt
  fig, axes = plt.subplots(1, panels, figsize=(width, height), squeeze=False)
  return plt, fig, axes[0]


def _save(plt, fig, path: str) -> None:
  fig.tight_layout()
  atomic.write_with(lambda tmp: fig.savefig(tmp, format='png', dpi=100), path)
  plt.close(fig)


def training_figure(workdir: str) -> Optional[str]:
  """``training.png`` from ``metrics.jsonl``; None when no loss was logged."""
  lines = read_metrics(workdir)
  losses = sorted({k for line in lines for k in line if k.startswith('loss/')})
  if not losses:
    return None
  protocols = sorted({k.split('/')[0] for line in lines for k in line if k.endswith('/mAP')})
  plt, fig, (left, right) = _figure(14, 4.5, 2)
  for key in losses:
    steps, values = series(lines, key)
    positive = [(s, v) for s, v in zip(steps, values) if v > 0]  # log scale
    if positive:
      left.plot(*zip(*positive), label=key[len('loss/'):],
                **({'color': 'black', 'linewidth': 2} if key == 'loss/total' else {}))
  left.set(xlabel='step', ylabel='loss (log scale)', yscale='log', title='loss terms')
  # Beside the axes, not over the curves (the total's most of all).
  left.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
  for i, p in enumerate(protocols):  # one colour per protocol: mAP solid, Rank-1 dashed
    for metric, style in (('mAP', '-o'), ('rank1', '--x')):
      steps, values = series(lines, f'{p}/{metric}')
      if steps:
        right.plot(steps, values, style, color=f'C{i}',
                   label=f'{p} {"Rank-1" if metric == "rank1" else metric}')
  right.set(xlabel='step', ylabel='%', xlim=left.get_xlim(),
            title='evaluation' if protocols else 'no evaluation yet')
  if protocols:
    right.legend(fontsize=7, ncol=2)
  path = RunFolder(workdir).training_plot
  _save(plt, fig, path)
  return path


def cmc_figure(workdir: str) -> Optional[str]:
  """``cmc.png`` from ``results.json``; None when the run has no results yet."""
  path = RunFolder(workdir).results_json
  if not os.path.exists(path):
    return None
  with open(path) as f:
    results = json.load(f)
  plt, fig, (ax,) = _figure(6, 4.5, 1)
  for p, r in results['protocols'].items():
    cmc = [100 * x for x in r['cmc']]
    ax.plot(range(1, len(cmc) + 1), cmc, label=f'{p} (R1 {cmc[0]:.1f}, mAP {100 * r["mAP"]:.1f})')
  ax.xaxis.get_major_locator().set_params(integer=True)
  ax.set(xlabel='rank k', ylabel='matched within the first k (%)', ylim=(0, 100),
         title=f'CMC, step {results["step"]}')
  ax.legend(fontsize=8)
  out = RunFolder(workdir).cmc_plot
  _save(plt, fig, out)
  return out


def write(workdir: str) -> List[str]:
  """Both pictures that the workdir's files allow; their paths."""
  return [p for p in (training_figure(workdir), cmc_figure(workdir)) if p]


def main(argv: Optional[List[str]] = None) -> int:
  from absl import flags
  fl = flags.FlagValues()
  workdir = flags.DEFINE_string('workdir', None, 'a run (training or evaluate mode)',
                                flag_values=fl)
  command_line.parse(fl, argv, __doc__)
  try:
    if not workdir.value or not os.path.isdir(workdir.value):
      raise UserError(f'--workdir={workdir.value}: not a folder; pass the workdir of a run '
                      '(python -m i2v_jax.plots --workdir=RUN)')
    paths = write(workdir.value)
    if not paths:
      raise UserError(f'--workdir={workdir.value}: holds neither metrics.jsonl with losses nor '
                      'results.json; train or evaluate into it first')
  except (flags.Error, UserError) as e:
    print(f'error: {str(e).splitlines()[0]}', file=sys.stderr)
    return 2
  for p in paths:
    print(f'wrote {p}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
