"""The ablation table and figure from a sweep's results file (one JSON line per run).

Each line: ``{'variant', 'seed', 'steps', 'protocols': {'i2v': {'mAP', 'cmc'}, ...},
'minutes', ...}`` (metrics as fractions, as in ``results.json``). Only the
results file is read, so a table started on one machine is finished on another.

Statistics (docs/method.md §7). Seeds are paired: seed s gives every variant the same data
order and initial weights. For a variant A and a reference R, over the seeds
where both finished, the paired differences d_s = A_s − R_s give

    mean ± t_{0.975, n−1} · sd(d) / √n          (95% t-interval, n ≥ 2)

and the interval is marked when it excludes 0. With n seeds the interval uses
t with n − 1 degrees of freedom: at n = 2 (t = 12.7) it rests on a single
degree of freedom and decides little; the protocol asks for n ≥ 5. The figure
shows each variant's I2V mAP mean with the 95% t-interval of that mean, and
beside it the paired difference to ``student_only`` with its interval.
"""

from __future__ import annotations

import collections
import json
import math
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from scipy import stats

from i2v_jax import atomic

METRICS = (('i2v', 'mAP'), ('i2v', 'rank1'), ('v2v', 'mAP'), ('v2v', 'rank1'))


def read_results(path: str) -> List[dict]:
  """Every run line of ``path``; for a (variant, seed, start) written twice, the
  last. A line without ``start`` belongs to the sweep's default start."""
  if not os.path.exists(path):
    return []
  runs = {}
  with open(path) as f:
    lines = f.read().split('\n')
  last = max((i for i, l in enumerate(lines) if l.strip()), default=-1)
  for number, line in enumerate(lines, 1):
    line = line.strip()
    if not line:
      continue
    try:
      run = json.loads(line)
    except json.JSONDecodeError as e:
      if number - 1 == last:  # an append cut short (disk full, a kill): drop it, say so
        print(f'note: {path} line {number} is cut short (an interrupted append); '
              'ignoring it: that run counts as not recorded', flush=True)
        continue
      raise ValueError(f'{path} line {number}: not JSON ({e}); remove or fix that line') from None
    runs[(run['variant'], run['seed'], run.get('start'))] = run
  return list(runs.values())


def metric(run: dict, protocol: str, name: str) -> float:
  """A run's metric in percent (mAP, or rank1 = CMC at rank 1)."""
  r = run['protocols'][protocol]
  return 100.0 * (r['mAP'] if name == 'mAP' else r['cmc'][0])


def t_interval(values: Sequence[float], level: float = 0.95
               ) -> Tuple[float, Optional[float]]:
  """(mean, half-width of the two-sided t-interval); half-width None for n < 2."""
  x = np.asarray(values, np.float64)
  if len(x) < 2:
    return float(x.mean()) if len(x) else math.nan, None
  half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
  return float(x.mean()), float(half)


def paired(runs: Iterable[dict], variant: str, reference: str, protocol: str = 'i2v',
           name: str = 'mAP') -> Tuple[List[int], List[float]]:
  """Seeds where both finished, and the differences variant − reference there."""
  by = {(r['variant'], r['seed']): r for r in runs}
  seeds = sorted(s for v, s in by if v == variant and (reference, s) in by)
  return seeds, [metric(by[variant, s], protocol, name) - metric(by[reference, s], protocol, name)
                 for s in seeds]


def _cell(mean: float, half: Optional[float]) -> str:
  if math.isnan(mean):
    return '—'
  return f'{mean:.1f}' if half is None else f'{mean:.1f} ± {half:.1f}'


def _diff_cell(diffs: List[float]) -> str:
  if not diffs:
    return '—'
  mean, half = t_interval(diffs)
  if half is None:
    return f'{mean:+.1f} (1 seed)'
  return f'{mean:+.1f} ± {half:.1f}' + (' *' if excludes_zero(mean, half) else '')


def excludes_zero(mean: float, half: Optional[float]) -> bool:
  """Whether the interval mean ± half lies wholly on one side of 0 (never for
  one seed, which has no interval)."""
  return half is not None and not math.isnan(mean) and (mean - half > 0 or mean + half < 0)


def provenance(runs: List[dict]) -> str:
  """One line: how many runs each commit and each processor made (XLA:CPU's
  kernels depend on the processor's vector set, so runs from two processors
  are two noise draws of the same code)."""
  def counts(key, missing):
    tally = collections.Counter(r.get(key) or missing for r in runs)
    return ', '.join(f'{k} ({n})' for k, n in sorted(tally.items()))
  return (f'Runs ({len(runs)}) by commit: {counts("commit", "unknown")}; by processor: '
          f'{counts("cpu", "not recorded")}.')


def table(runs: List[dict], variants: Sequence[dict],
          references: Sequence[str] = ('student_only', 'vkd', 'tkp', 'mdkt')) -> str:
  """Markdown: per variant, mean ± 95% t-half-width of I2V/V2V mAP and Rank-1,
  the paired I2V mAP difference to each reference (the image network alone, the
  two baselines a transfer method must beat, and the `mdkt` preset, which every
  other reading of MDKT changes in one thing), seeds and minutes per run."""
  head = (['variant'] + [f'{p.upper()} {m}' for p, m in METRICS]
          + [f'Δ I2V mAP vs {r}' for r in references] + ['seeds', 'min/run'])
  lines = ['| ' + ' | '.join(head) + ' |', '|' + ' --- |' * len(head)]
  names = {v['name'] for v in variants}
  for v in variants:
    mine = [r for r in runs if r['variant'] == v['name']]
    cells = [v['name']]
    for p, m in METRICS:
      values = [metric(r, p, m) for r in mine if p in r['protocols']]
      cells.append(_cell(*t_interval(values)) if values else '—')
    for ref in references:
      cells.append('' if v['name'] == ref else _diff_cell(paired(runs, v['name'], ref)[1]))
    cells.append(str(len(mine)))
    minutes = [r['minutes'] for r in mine if r.get('minutes')]
    cells.append(f'{np.median(minutes):.1f}' if minutes else '—')
    lines.append('| ' + ' | '.join(cells) + ' |')
  notes = ['', 'Cells: mean ± half-width of the 95% t-interval over seeds; Δ: paired '
           'difference (same seeds), * = its 95% interval excludes 0; min/run: median.',
           '', provenance([r for r in runs if r['variant'] in names]),
           '']
  notes += [f'- **{v["name"]}**: {v["about"]}' for v in variants if v.get('about')]
  return '\n'.join(lines + notes) + '\n'


def measurements_table(runs: List[dict], variants: Sequence[dict]) -> str:
  """Markdown: per variant, mean ± 95% t-half-width over seeds of every value the
  non-ranking evaluators returned (``<evaluator>/<metric>``, e.g. agreement's
  CKA); empty when no run has any."""
  keys = sorted({f'{e}/{k}' for r in runs for e, named in (r.get('evaluators') or {}).items()
                 for k in named})
  if not keys:
    return ''
  value = lambda r, key: (r.get('evaluators') or {}).get(key.split('/')[0], {}).get(
      key.split('/', 1)[1])
  lines = ['| variant | ' + ' | '.join(keys) + ' | seeds |', '|' + ' --- |' * (len(keys) + 2)]
  for v in variants:
    mine = [r for r in runs if r['variant'] == v['name']]
    cells = []
    for key in keys:
      xs = [value(r, key) for r in mine if value(r, key) is not None]
      mean, half = t_interval(xs) if xs else (math.nan, None)
      cells.append('—' if not xs else f'{mean:.3f}' if half is None
                   else f'{mean:.3f} ± {half:.3f}')
    if any(c != '—' for c in cells):
      lines.append(f'| {v["name"]} | ' + ' | '.join(cells) + f' | {len(mine)} |')
  return '\n'.join(lines) + '\n'


def interval_colour(mean: float, half: Optional[float]) -> str:
  """The figure's colour of a paired difference: green / red where its 95%
  interval lies above / below 0, grey where it includes 0 or there is no
  interval (one paired seed says nothing about the spread)."""
  if not excludes_zero(mean, half):
    return '#999999'
  return '#2e8b57' if mean > 0 else '#c0392b'


def figure(runs: List[dict], variants: Sequence[dict], path: str,
           reference: str = 'student_only') -> None:
  """PNG, two panels per variant: I2V mAP (mean and 95% t-interval over seeds),
  and the paired I2V mAP difference to ``reference`` with its 95% t-interval."""
  import matplotlib  # only the report draws
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  rows = []  # (name, n, mean, half, diff mean, diff half or None)
  for v in variants:
    values = [metric(r, 'i2v', 'mAP') for r in runs if r['variant'] == v['name']]
    if not values:
      continue
    mean, half = t_interval(values)
    diffs = paired(runs, v['name'], reference)[1] if v['name'] != reference else []
    d_mean, d_half = t_interval(diffs) if diffs else (math.nan, None)
    rows.append((v['name'], len(values), mean, half or 0.0, d_mean, d_half))
  fig, (left, right) = plt.subplots(1, 2, sharey=True, figsize=(11, 0.36 * max(len(rows), 1) + 1.4))
  y = np.arange(len(rows))[::-1]
  left.barh(y, [r[2] for r in rows], xerr=[r[3] for r in rows], color='#7fa7d9',
            ecolor='black', capsize=3)
  left.set_yticks(y)
  left.set_yticklabels([f'{r[0]} (n={r[1]})' for r in rows], fontsize=8)
  left.set_xlabel('I2V mAP (%)')
  left.set_title('I2V mAP: mean, 95% t-interval over seeds', fontsize=9)
  right.barh(y, [0.0 if math.isnan(r[4]) else r[4] for r in rows],
             xerr=[r[5] or 0.0 for r in rows], color=[interval_colour(*r[4:]) for r in rows],
             ecolor='black', capsize=3)
  right.axvline(0.0, color='black', linewidth=0.8)
  right.set_xlabel(f'paired Δ I2V mAP vs {reference} (%)')
  right.set_title(f'paired Δ vs {reference}, 95% t-interval\n'
                  '(green / red: the interval excludes 0)', fontsize=9)
  fig.tight_layout()
  try:  # a full disk: one line, no half-written figure or temporary file left
    atomic.write_with(lambda tmp: fig.savefig(tmp, format='png', dpi=110), path)
  finally:
    plt.close(fig)


def by_start(runs: List[dict], default: str) -> Dict[str, List[dict]]:
  """Runs grouped by their start (a line without one: ``default``), in the
  order the starts first appear, ``default`` first."""
  groups: Dict[str, List[dict]] = {default: []}
  for r in runs:
    groups.setdefault(r.get('start') or default, []).append(r)
  return {k: v for k, v in groups.items() if v}


def tcl_figure(groups: Dict[str, List[dict]], path: str) -> bool:
  """PNG of TCL over training per start: its value (mean over seeds) for every
  variant that logged it, and the teacher's and student's softmax mass on the
  positives for each. Returns False (nothing drawn) when no run logged TCL."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  starts = [st for st, rs in groups.items() if any(r.get('diagnostics') for r in rs)]
  if not starts:
    return False
  fig, axes = plt.subplots(len(starts), 2, figsize=(11, 3.2 * len(starts)), squeeze=False)
  for row, st in zip(axes, starts):
    names = sorted({r['variant'] for r in groups[st] if r.get('diagnostics', {}).get('loss/tcl')})
    for i, name in enumerate(names):
      colour = f'C{i % 10}'
      series = [r['diagnostics'] for r in groups[st] if r['variant'] == name
                and r.get('diagnostics', {}).get('loss/tcl')]
      steps = series[0]['step']
      series = [d for d in series if d['step'] == steps]  # same logging steps only
      mean = lambda key, series=series: np.nanmean(np.array([[np.nan if v is None else v for v in d[key]]
                                              for d in series], np.float64), axis=0)
      row[0].plot(steps, mean('loss/tcl'), color=colour, label=f'{name} (n={len(series)})')
      if 'diag/tcl/teacher_p_pos' in series[0]:
        row[1].plot(steps, mean('diag/tcl/teacher_p_pos'), color=colour, label=f'{name} teacher')
        row[1].plot(steps, mean('diag/tcl/student_p_pos'), color=colour, linestyle='--',
                    label=f'{name} student')
    row[0].set_title(f'start {st}: TCL (mean over seeds)', fontsize=9)
    row[0].set_xlabel('step')
    row[0].set_yscale('log')
    row[0].legend(fontsize=6)
    row[1].set_title(f'start {st}: softmax mass on positives (teacher solid, '
                     'student dashed)', fontsize=9)
    row[1].set_xlabel('step')
    row[1].legend(fontsize=6, ncol=2)
  fig.tight_layout()
  try:
    atomic.write_with(lambda tmp: fig.savefig(tmp, format='png', dpi=100), path)
  finally:
    plt.close(fig)
  return True


def write_report(results_path: str, variants: Sequence[dict], out_dir: str,
                 stem: str, default_start: str = 'default') -> Dict[str, object]:
  """Writes ``<stem>.md`` (a table per start), ``<stem>.png`` (the default
  start's figure), ``<stem>-start-<name>.png`` (every other start's) and
  ``<stem>-tcl.png`` (TCL over training per start) into ``out_dir``; returns
  {'table', 'figure' (the default start's), 'figures' (all)}."""
  groups = by_start(read_results(results_path), default_start)
  md = os.path.join(out_dir, f'{stem}.md')
  png = os.path.join(out_dir, f'{stem}.png')
  sections, figures = [], []
  for st, runs in groups.items():
    here = [v for v in variants if any(r['variant'] == v['name'] for r in runs)]
    path = png if st == default_start else os.path.join(out_dir, f'{stem}-start-{st}.png')
    figure(runs, here, path)
    figures.append(path)
    if len(groups) > 1 or st != default_start:  # a file of one other start names it
      sections.append(f'## Start: {st}\n\nFigure: `{os.path.basename(path)}`\n')
    sections.append(table(runs, here))
    measured = measurements_table(runs, here)
    if measured:
      sections.append('Other evaluators (mean ± 95% t-interval over seeds):\n\n' + measured)
  tcl_png = os.path.join(out_dir, f'{stem}-tcl.png')
  if tcl_figure(groups, tcl_png):
    figures.append(tcl_png)
  atomic.write_text('\n'.join(sections), md)
  return {'table': md, 'figure': png, 'figures': figures}
