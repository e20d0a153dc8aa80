"""The protocols (docs/method.md §1): I2V, V2V, I2I, V2I from one set of features.

The protocols and metrics are the tables of `i2v_jax.eval_tables`; `run` runs the
configured evaluators (`evaluators.EVALUATORS`): the ranking one extracts the
features the configured protocols need and ranks and scores each; re-ranking
(`rerank`), export, ranked-list pictures (`visualize`) and the others follow; the
results are written by `report`.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List

import jax
import numpy as np

from i2v_jax import input_pipeline
from i2v_jax.distances import pairwise_distance
from i2v_jax.evaluation import evaluators, rerank, visualize
from i2v_jax.evaluation.features import encode_fns, encoders, extract_features, network_variables
from i2v_jax.evaluation.metrics import blocked_metrics
from i2v_jax.evaluation.report import results_table, scalar_metrics, write_results
from i2v_jax.eval_tables import PROTOCOLS
from i2v_jax.run_folder import RunFolder


def split_info(dataset, split: str) -> Dict[str, np.ndarray]:
  rows = dataset.rows(split)
  return {'pids': np.array([r['pid'] for r in rows], np.int32),
          'camids': np.array([r['camid'] for r in rows], np.int32),
          'names': np.array([r['name'] for r in rows])}


def video_query_rows(query: Dict[str, np.ndarray], gallery: Dict[str, np.ndarray]) -> np.ndarray:
  """For image-only query splits (VeRi): the gallery track with the query's pid and camera.

  Returns (Q,) gallery row indices, −1 where no such track exists (that query
  is then skipped in V2V and V2I and counted).
  """
  first = {}
  for i, key in enumerate(zip(gallery['pids'], gallery['camids'])):
    first.setdefault(key, i)
  return np.array([first.get(key, -1) for key in zip(query['pids'], query['camids'])])


def compute_features(config, dataset, state, num_classes: int, mesh, encode=None
                     ) -> Dict[str, Dict[str, np.ndarray]]:
  """Features of every (split, kind) the configured protocols need.

  Returns {'query/image': {'features', 'pids', 'camids', 'names'}, ...}. Image
  entries use the first (or middle, ``eval.query_frame``) frame of a tracklet.
  When the query split holds single images (VeRi), 'query/video' is the gallery
  track with the query's vehicle and camera (``video_query_rows``). ``encode``:
  the run's `encode_fns` (built here when not given).
  """
  protocols = tuple(config.eval.protocols)
  unknown = [p for p in protocols if p not in PROTOCOLS]
  if unknown:
    raise ValueError(f'config eval.protocols has {unknown}: choose from {tuple(PROTOCOLS)}')
  image_only_queries = dataset.image_only_queries
  needed = set()
  for p in protocols:
    q_kind, g_kind = PROTOCOLS[p].query, PROTOCOLS[p].gallery
    needed.add(('gallery', g_kind))
    needed.add(('gallery', 'video') if (q_kind == 'video' and image_only_queries)
               else ('query', q_kind))
  nets = encoders(config)
  fns = encode or encode_fns(config, num_classes)
  info = {s: split_info(dataset, s) for s in ('query', 'gallery')}
  out = {}
  for split, kind in sorted(needed):
    net = nets[kind]
    features = extract_features(config, dataset, split, mode=kind, encode_fn=fns[net],
                                variables=network_variables(state, net), mesh=mesh)
    out[f'{split}/{kind}'] = dict(info[split], features=features)
  if image_only_queries and any(PROTOCOLS[p].query == 'video' for p in protocols):
    rows = video_query_rows(info['query'], info['gallery'])
    g = out['gallery/video']['features']
    features = np.where((rows >= 0)[:, None], g[np.maximum(rows, 0)], 0.0).astype(np.float32)
    # A query without a track gets pid −2 (matches nothing) so it is skipped and counted.
    pids = np.where(rows >= 0, info['query']['pids'], -2).astype(np.int32)
    out['query/video'] = dict(info['query'], features=features, pids=pids)
  return out


def protocol_metrics(config, features: Dict[str, Dict[str, np.ndarray]]
                     ) -> Dict[str, Dict[str, object]]:
  """{protocol: blocked_metrics(...)} for every configured protocol."""
  ev = config.eval
  return {p: blocked_metrics(features[f'query/{PROTOCOLS[p].query}']['features'],
                             features[f'gallery/{PROTOCOLS[p].gallery}']['features'],
                             distance=ev.distance, **_labels(ev, features, p))
          for p in ev.protocols}


def reranked_metrics(config, features: Dict[str, Dict[str, np.ndarray]]
                     ) -> Dict[str, Dict[str, object]]:
  """{'<protocol>+rerank': blocked_metrics(...) of the re-ranked distances, with
  those distances as 'distmat'} for every configured protocol."""
  ev = config.eval
  results = {}
  for p in ev.protocols:
    q = features[f'query/{PROTOCOLS[p].query}']
    g = features[f'gallery/{PROTOCOLS[p].gallery}']
    distmat = reranked_distances(ev, q['features'], g['features'])
    results[f'{p}+rerank'] = dict(blocked_metrics(distmat=distmat, **_labels(ev, features, p)),
                                  distmat=distmat)
  return results


def _labels(ev, features, p: str) -> dict:
  q, g = features[f'query/{PROTOCOLS[p].query}'], features[f'gallery/{PROTOCOLS[p].gallery}']
  return dict(q_pids=q['pids'], g_pids=g['pids'], q_camids=q['camids'], g_camids=g['camids'],
              ap_mode=ev.ap_mode, max_rank=ev.max_rank, query_block=ev.query_block)


def reranked_distances(ev, queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
  """(Q, G) k-reciprocal re-ranked distances (float64) with ``ev``'s distance
  and ``rerank_k1/k2/lambda`` (``ev``: a config's ``eval``)."""
  qf, gf = queries.astype(np.float64), gallery.astype(np.float64)
  dist = lambda a, b: pairwise_distance(a, b, ev.distance, xp=np)
  return rerank.k_reciprocal(dist(qf, gf), dist(qf, qf), dist(gf, gf), k1=ev.rerank_k1,
                             k2=ev.rerank_k2, lambda_value=ev.rerank_lambda)


@dataclasses.dataclass
class Evaluation:
  """What one evaluation measured: ``ranking`` ({protocol: results}, re-ranked
  ones as '<protocol>+rerank' after theirs), ``values`` ({evaluator: {metric:
  value}} of the other evaluators), ``scalars`` (all of it flat, in % for the
  ranking metrics: 'i2v/mAP', 'agreement/cka_gallery': logs, TensorBoard,
  ``train.best_metric``) and ``artifacts`` (files written)."""
  ranking: Dict[str, Dict[str, object]]
  values: Dict[str, Dict[str, float]]
  scalars: Dict[str, float]
  artifacts: List[str]


def run(config, dataset, state, num_classes: int, mesh, *, workdir: str,
        step: int, verbose: bool = True, title: str = '', encode=None,
        final: bool = True) -> Evaluation:
  """Every configured evaluator (`evaluators.EVALUATORS`: ranking per protocol,
  re-ranking, agreement, held-out accuracy, export, pictures) -> the results
  printed and written (``results.{json,md}``) into ``workdir``.

  ``final``: the run's last evaluation (evaluators in ``eval.final_only`` run
  only then). ``encode``: the run's encoders (`encode_fns`; more are added for
  the networks an evaluator needs). Every process computes the same results;
  only process 0 prints and writes.
  """
  lead = jax.process_index() == 0
  ctx = evaluators.Context(config, dataset, state, num_classes, mesh, workdir, step, final,
                           encode if encode is not None else encode_fns(config, num_classes),
                           lead=lead)
  for name, evaluator in evaluators.EVALUATORS.items():
    if evaluators.wanted(config, evaluator, final) and (lead or not evaluator.lead_only):
      ctx.outputs[name] = evaluator.run(ctx)
  ranking = {}
  for p in config.eval.protocols:  # each protocol, then its re-ranked variant
    for out in ctx.outputs.values():
      ranking.update({k: v for k, v in out.ranking.items() if k in (p, f'{p}+rerank')})
  values = {name: out.scalars for name, out in ctx.outputs.items() if out.scalars}
  scalars = dict(scalar_metrics(ranking))
  for name, named in values.items():
    scalars.update({f'{name}/{k}': float(v) for k, v in named.items()})
  artifacts = [path for out in ctx.outputs.values() for path in out.artifacts]
  result = Evaluation(ranking, values, scalars, artifacts)
  if not lead:
    return result
  title = title or f'{dataset.name}, step {step}'
  write_results(ranking, workdir, step=step, title=title, values=values)
  if verbose:
    print(results_table(ranking, title, values), flush=True)
    for path in artifacts:
      print(f'wrote {path}', flush=True)
  return result


def draw_ranked_lists(config, dataset, features, results, workdir: str) -> list:
  """``ranked_<protocol>.png`` per protocol (and ``ranked_<protocol>+rerank.png``
  with ``eval.rerank``); returns the paths."""
  ev, inp = config.eval, config.input
  query_reader = input_pipeline.TrackletReader(dataset, 'query')
  gallery_reader = input_pipeline.TrackletReader(dataset, 'gallery')
  frame = [0 if ev.query_frame == 'first' else int(r['num_frames']) // 2
           for r in query_reader.rows]
  size = visualize.thumbnail_size(inp.height, inp.width)
  paths = []
  for p in ev.protocols:
    q_kind, g_kind = PROTOCOLS[p].query, PROTOCOLS[p].gallery
    q, g = features[f'query/{q_kind}'], features[f'gallery/{g_kind}']
    if ev.visualize_queries:
      rows, which = visualize.chosen_queries(q['names'], ev.visualize_queries), 'chosen queries'
    else:
      rows = visualize.worst_queries(results[p]['ap'], ev.visualize)
      which = f'the {len(rows)} worst-AP queries'
    variants = [(p, pairwise_distance(q['features'][rows], g['features'], ev.distance, xp=np),
                 f'{ev.distance} distance')]
    if ev.rerank:
      variants.append((f'{p}+rerank', results[f'{p}+rerank']['distmat'][rows],
                       'k-reciprocal re-ranking'))
    for name, distmat, how in variants:
      lists = visualize.ranked_lists(rows, distmat, q, g, top=ev.visualize_top)
      title = (f'{dataset.name} {name.upper()}: {which}, top {ev.visualize_top} by {how} '
               '(green: same identity; same-camera matches removed as junk)')
      path = RunFolder(workdir).ranked(name)
      visualize.render(lists, query_reader, frame, gallery_reader, path, size,
                       title=title, query=q, gallery=g, ap=results[name]['ap'])
      paths.append(path)
  return paths
