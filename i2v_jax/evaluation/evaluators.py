"""The evaluators table: every measurement an evaluation makes, one entry each.

An `Evaluator` has a name, the config switch that turns it on (always on
without one), whether it runs at every evaluation (``train.eval_every`` and the
final step) or only at the final one (``eval.final_only`` names those), and a
``run(context) -> Output``. The `Context` gives what an evaluator may need:
the config, the dataset, the train state, the run folder, the features of the
configured protocols (computed once, on first use) and the encoders of any
network (`Context.encoder`), and what the evaluators before it returned.

An `Output` holds named scalars (reported as ``<evaluator>/<metric>``),
ranking results (``{protocol: blocked_metrics(...)}``: the ranking evaluators,
reported as ``<protocol>/<metric>``, so ``i2v/mAP`` keeps its name) and the
files it wrote. `i2v_jax.evaluation.run` loops over the table and hands the
outputs to every report: ``results.json`` / ``results.md``, the logs and
TensorBoard (the trainer writes `Evaluation.scalars`), ``train.best_metric``
and the sweep's results file and report. A new measurement is one entry here,
its switch in the library defaults, its test and its docs line.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from i2v_jax import input_pipeline
from i2v_jax.distances import pairwise_distance


@dataclasses.dataclass
class Output:
  scalars: Dict[str, float] = dataclasses.field(default_factory=dict)
  ranking: Dict[str, Dict[str, Any]] = dataclasses.field(default_factory=dict)
  artifacts: List[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Context:
  """What an evaluator may read. ``encode``: network -> its encoder, shared by
  every evaluation of a run (so each compiles once); ``outputs``: the outputs
  of the evaluators that ran before, by name."""
  config: Any
  dataset: Any
  state: Any
  num_classes: int
  mesh: Any
  workdir: str
  step: int
  final: bool
  encode: Dict[str, Any]
  lead: bool = True
  outputs: Dict[str, Output] = dataclasses.field(default_factory=dict)
  _features: Optional[Dict[str, Dict[str, np.ndarray]]] = None

  def encoder(self, network: str):
    """The encoder of ``network`` (`make_encode_fn`), built on first use."""
    from i2v_jax.evaluation.features import make_encode_fn
    if network not in self.encode:
      self.encode[network] = make_encode_fn(self.config, self.num_classes, network)
    return self.encode[network]

  def features(self) -> Dict[str, Dict[str, np.ndarray]]:
    """The configured protocols' features (`compute_features`), computed once."""
    from i2v_jax.evaluation.protocols import compute_features
    if self._features is None:
      nets = set(self.encode) | set(_encoders(self.config).values())
      fns = {net: self.encoder(net) for net in sorted(nets)}
      self._features = compute_features(self.config, self.dataset, self.state,
                                        self.num_classes, self.mesh, fns)
    return self._features

  def network_features(self, network: str, split: str, kind: str) -> np.ndarray:
    """(N, D) features of ``split`` encoded by ``network`` as ``kind`` entries."""
    from i2v_jax.evaluation.features import extract_features, network_variables
    return extract_features(self.config, self.dataset, split, mode=kind,
                            encode_fn=self.encoder(network),
                            variables=network_variables(self.state, network), mesh=self.mesh)


def _encoders(config):
  from i2v_jax.evaluation.features import encoders
  return encoders(config)


@dataclasses.dataclass(frozen=True)
class Evaluator:
  """One entry of `EVALUATORS` (module docstring). ``switch``: the config key
  that turns it on ('' = always on); ``metrics``: the scalars it returns (what
  ``train.best_metric`` may name as ``<name>/<metric>``; the ranking ones are
  named by protocol instead); ``lead_only``: it writes files, so only process 0
  runs it."""
  name: str
  run: Callable[[Context], Output]
  switch: str
  about: str
  metrics: Tuple[str, ...] = ()
  lead_only: bool = False


# ------------------------------------------------------------------ entries


def _ranking(ctx: Context) -> Output:
  from i2v_jax.evaluation.protocols import protocol_metrics
  return Output(ranking=protocol_metrics(ctx.config, ctx.features()))


def _rerank(ctx: Context) -> Output:
  from i2v_jax.evaluation.protocols import reranked_metrics
  ev = ctx.config.eval
  ranking = reranked_metrics(ctx.config, ctx.features())
  if not (ev.visualize or ev.visualize_queries):  # only the pictures read the matrices
    for r in ranking.values():
      r.pop('distmat', None)
  return Output(ranking=ranking)


def _export(ctx: Context) -> Output:
  from i2v_jax.evaluation.report import export_features
  return Output(artifacts=export_features(ctx.features(), ctx.workdir))


def _pictures(ctx: Context) -> Output:
  from i2v_jax.evaluation.protocols import draw_ranked_lists
  ranking = {}
  for out in ctx.outputs.values():
    ranking.update(out.ranking)
  return Output(artifacts=draw_ranked_lists(ctx.config, ctx.dataset, ctx.features(),
                                            ranking, ctx.workdir))


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
  """Linear CKA (Kornblith et al., ICML 2019) of (n, p) and (n, q) features:
  with columns centred, ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F); 1 when one is an
  orthogonal transform and rescaling of the other, invariant to both."""
  x = x.astype(np.float64) - x.mean(axis=0)
  y = y.astype(np.float64) - y.mean(axis=0)
  cross = np.linalg.norm(y.T @ x) ** 2
  return float(cross / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
  """Spearman's rank correlation of two equally shaped arrays (flattened): the
  Pearson correlation of their ranks, ties given their average rank."""
  from scipy import stats
  ra = stats.rankdata(a.ravel())
  rb = stats.rankdata(b.ravel())
  return float(np.corrcoef(ra, rb)[0, 1])


def _agreement(ctx: Context) -> Output:
  """Two networks' geometry on the evaluation split: linear CKA of their
  gallery video features and of their query image features, and the Spearman
  correlation of their query-to-gallery distance matrices (each network's own
  image-to-video distances, ``eval.distance``). Nothing when the run lacks one."""
  a, b = tuple(ctx.config.eval.agreement_networks)
  have = {net.name for net in ctx.state.networks}
  if not {a, b} <= have:
    return Output()
  feats = {net: {(split, kind): ctx.network_features(net, split, kind)
                 for split, kind in (('query', 'image'), ('gallery', 'video'))}
           for net in (a, b)}
  dist = lambda f: pairwise_distance(f[('query', 'image')].astype(np.float64),
                                     f[('gallery', 'video')].astype(np.float64),
                                     ctx.config.eval.distance, xp=np)
  return Output(scalars={
      'cka_gallery': linear_cka(feats[a][('gallery', 'video')], feats[b][('gallery', 'video')]),
      'cka_query': linear_cka(feats[a][('query', 'image')], feats[b][('query', 'image')]),
      'spearman': spearman(dist(feats[a]), dist(feats[b]))})


def _heldout(ctx: Context) -> Output:
  """Top-1 accuracy of the image network's classifier on every frame of the
  query and gallery splits whose identity is a training class (a pool whose
  held-out splits show the training classes: `data_prep.objects`), and chance."""
  import jax
  from jax.sharding import NamedSharding, PartitionSpec
  from i2v_jax.evaluation.features import network_variables
  name = _encoders(ctx.config)['image']
  model, variables = ctx.state.network(name), network_variables(ctx.state, name)
  id_map = ctx.dataset.metadata['id_map']
  sharding = NamedSharding(ctx.mesh, PartitionSpec(ctx.mesh.axis_names[0]))
  logits_of = jax.jit(lambda v, x: model.apply(v, x, train=False)['logits'].argmax(-1))
  correct = total = 0
  for split in ('query', 'gallery'):
    rows = ctx.dataset.rows(split)
    label = np.array([id_map.get(str(r['pid']), -1) for r in rows])
    batch = ctx.config.eval.batch_size * len(ctx.mesh.local_devices)
    ds = input_pipeline.eval_dataset(ctx.dataset, split, ctx.config, mode='video',
                                     batch_size=batch)
    for local in input_pipeline.numpy_batches(ds):
      frames, mask, row = local['frames'], local['mask'], local['row']
      n, c = frames.shape[:2]
      images = jax.make_array_from_process_local_data(
          sharding, frames.reshape((n * c,) + frames.shape[2:]))
      predicted = np.asarray(logits_of(variables, images)).reshape(n, c)
      truth = np.where(row >= 0, label[np.maximum(row, 0)], -1)[:, None]
      keep = mask & (truth >= 0)
      correct += int(np.sum((predicted == truth) & keep))
      total += int(np.sum(keep))
  if not total:
    return Output()
  return Output(scalars={'accuracy': correct / total, 'chance': 1.0 / ctx.num_classes,
                         'images': float(total)})


# The one table of evaluators, in the order they run (each may read the outputs
# of those before it: the pictures read the ranking and the re-ranking).
EVALUATORS: Dict[str, Evaluator] = {e.name: e for e in (
    Evaluator('ranking', _ranking, '', 'CMC and every ranking metric per protocol '
              '(eval.protocols; the tables of i2v_jax.eval_tables)'),
    Evaluator('rerank', _rerank, 'eval.rerank', 'the same after k-reciprocal re-ranking, '
              'as <protocol>+rerank'),
    Evaluator('agreement', _agreement, 'eval.agreement', 'linear CKA and distance-rank '
              'correlation between eval.agreement_networks',
              ('cka_gallery', 'cka_query', 'spearman')),
    Evaluator('heldout', _heldout, 'eval.heldout', 'classification accuracy on held-out '
              'images of the training classes', ('accuracy', 'chance', 'images')),
    Evaluator('export', _export, 'eval.export', 'features-<split>-<kind>.npz', lead_only=True),
    Evaluator('pictures', _pictures, 'eval.visualize', 'ranked_<protocol>.png',
              lead_only=True),
)}


def wanted(config, evaluator: Evaluator, final: bool) -> bool:
  """Whether ``evaluator`` runs in this evaluation: its switch is on (the
  pictures: ``eval.visualize`` or ``eval.visualize_queries``) and, when
  ``eval.final_only`` names it, this is the final one."""
  from i2v_jax import config_lib
  on = not evaluator.switch or bool(config_lib.get(config, evaluator.switch))
  if evaluator.name == 'pictures':
    on = on or bool(config.eval.visualize_queries)
  return on and (final or evaluator.name not in tuple(config.eval.final_only))
