"""The evaluators table: agreement's CKA and Spearman from their definitions,
and an evaluator added by one entry reaching every report."""

import json
import os

import numpy as np
import pytest

from i2v_jax import hooks, trainer
from i2v_jax.evaluation import evaluators
from i2v_jax.experiments import report as sweep_report
from i2v_jax.experiments import sweep
from tests.test_trainer import tiny_config


def ref_cka(x, y):
  """HSIC form: K = XXᵀ, L = YYᵀ, H = I − 11ᵀ/n; tr(KHLH) / √(tr(KHKH) tr(LHLH))."""
  n = len(x)
  h = np.eye(n) - np.ones((n, n)) / n
  k, l = x @ x.T, y @ y.T
  hsic = lambda a, b: np.trace(a @ h @ b @ h)
  return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def ref_ranks(values):
  """1-based ranks, ties sharing the mean of the ranks they span (plain loops)."""
  out = []
  for v in values:
    below = sum(1 for w in values if w < v)
    same = sum(1 for w in values if w == v)
    out.append(below + (same + 1) / 2)
  return out


def ref_pearson(a, b):
  n = len(a)
  ma, mb = sum(a) / n, sum(b) / n
  cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
  return cov / (sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b)) ** 0.5


def test_spearman_by_hand():
  # Ranks 1 2 3 4 against 1 3 2 4: 1 − 6·Σd²/(n(n²−1)) = 1 − 6·2/60 = 0.8.
  assert evaluators.spearman(np.array([1., 2, 3, 4]), np.array([1., 3, 2, 4])) == pytest.approx(0.8)
  # Ties take their mean rank; a 2-d matrix is flattened.
  a = np.array([[0.3, 0.1, 0.1], [0.9, 0.5, 0.2]])
  b = np.array([[2.0, 1.0, 3.0], [6.0, 5.0, 4.0]])
  want = ref_pearson(ref_ranks(a.ravel().tolist()), ref_ranks(b.ravel().tolist()))
  assert evaluators.spearman(a, b) == pytest.approx(want)


def test_linear_cka_against_its_hsic_definition():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((12, 5))
  y = x @ rng.standard_normal((5, 3)) + 0.3 * rng.standard_normal((12, 3))
  assert evaluators.linear_cka(x, y) == pytest.approx(ref_cka(x, y), rel=1e-9)
  # An orthogonal transform, a scale and a shift change nothing: CKA 1.
  q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
  assert evaluators.linear_cka(x, 3 * x @ q + 1.0) == pytest.approx(1.0)
  assert 0.0 <= evaluators.linear_cka(x, rng.standard_normal((12, 4))) < 1.0


def test_agreement_of_a_trained_run_from_its_features(tmp_path, cli_data_dir):
  """agreement/* of a 2-step mdkt run equal the definitions applied to the two
  networks' features (extracted here with the features stage, tested on its own)."""
  from i2v_jax import checkpoint, train_step
  from i2v_jax.dataset_folder import Dataset
  from i2v_jax.distances import pairwise_distance
  from i2v_jax.evaluation import extract_features, make_encode_fn
  c = tiny_config(cli_data_dir, steps=2)
  c.eval.agreement = True
  workdir = str(tmp_path / 'run')
  last = trainer.train_and_log(c, workdir)
  saved = json.load(open(os.path.join(workdir, 'results.json')))['evaluators']['agreement']
  assert set(saved) == {'cka_gallery', 'cka_query', 'spearman'}
  assert last['agreement/spearman'] == saved['spearman']
  dataset, mesh = Dataset.open(cli_data_dir), train_step.make_mesh()
  feats = {}
  for net in ('teacher', 'student'):
    variables = checkpoint.load_network(workdir, net)
    fn = make_encode_fn(c, dataset.num_classes, net)
    feats[net] = {kind: extract_features(c, dataset, split, mode=kind, encode_fn=fn,
                                         variables=train_step.replicate(variables, mesh), mesh=mesh)
                  for split, kind in (('query', 'image'), ('gallery', 'video'))}
  assert saved['cka_gallery'] == pytest.approx(
      ref_cka(feats['teacher']['video'].astype(np.float64),
              feats['student']['video'].astype(np.float64)), rel=1e-5)
  assert saved['cka_query'] == pytest.approx(
      ref_cka(feats['teacher']['image'].astype(np.float64),
              feats['student']['image'].astype(np.float64)), rel=1e-5)
  dist = {n: pairwise_distance(f['image'].astype(np.float64), f['video'].astype(np.float64),
                               'cosine', xp=np).ravel().tolist() for n, f in feats.items()}
  assert saved['spearman'] == pytest.approx(
      ref_pearson(ref_ranks(dist['teacher']), ref_ranks(dist['student'])), rel=1e-4)


def test_a_new_evaluator_is_one_entry_and_reaches_every_report(tmp_path, cli_data_dir,
                                                              monkeypatch):
  """A fork's measurement: one entry in EVALUATORS (and a loop hook: one in
  HOOKS). Its values reach results.json and results.md, the logged metrics (metrics.jsonl, TensorBoard), the best
  checkpoint's choice, and the sweep's results line and report; with
  eval.final_only it runs at the last evaluation only."""
  calls = []

  def count_queries(ctx):
    calls.append(ctx.step)
    return evaluators.Output(scalars={'queries': float(len(ctx.dataset.rows('query'))),
                                      'step': float(ctx.step)})
  monkeypatch.setitem(evaluators.EVALUATORS, 'counter', evaluators.Evaluator(
      'counter', count_queries, '', 'test', ('queries', 'step')))
  # And a loop hook, one entry too: it sees every logged step and evaluation.
  seen = []
  monkeypatch.setitem(hooks.HOOKS, 'recorder', hooks.Hook(
      'recorder', after_log=lambda loop, done, m: seen.append(('log', done, 'loss/total' in m)),
      after_evaluation=lambda loop, done, m: seen.append(('eval', done, m.get('counter/step')))))
  c = tiny_config(cli_data_dir, steps=4)
  c.train.eval_every = 2
  c.train.best_metric = 'counter/step'
  workdir = str(tmp_path / 'run')
  trainer.train_and_log(c, workdir)
  assert calls == [2, 4]
  assert seen == [('log', 2, True), ('eval', 2, 2.0), ('log', 4, True), ('eval', 4, 4.0)]
  results = json.load(open(os.path.join(workdir, 'results.json')))
  assert results['evaluators']['counter'] == {'queries': 4.0, 'step': 4.0}
  assert '| counter/step | 4.0000 |' in open(os.path.join(workdir, 'results.md')).read()
  logged = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert [r['counter/step'] for r in logged if 'counter/step' in r] == [2.0, 4.0]
  assert os.listdir(os.path.join(workdir, 'checkpoints_best')) == ['4']  # the larger step
  line = sweep.result_line({'name': 'mdkt'}, 0, workdir, 60.0)
  assert line['evaluators']['counter']['queries'] == 4.0
  path = str(tmp_path / 'results.jsonl')
  with open(path, 'w') as f:
    f.write(json.dumps(line) + '\n')
  out = sweep_report.write_report(path, [{'name': 'mdkt', 'about': ''}], str(tmp_path), 'r')
  assert '| mdkt | 4.000 | 4.000 | 1 |' in open(out['table']).read()
  # Final only: one call, at the last step.
  calls.clear()
  c.eval.final_only = ('counter',)
  c.train.best_metric = 'i2v/mAP'
  trainer.train_and_log(c, str(tmp_path / 'final_only'))
  assert calls == [4]
