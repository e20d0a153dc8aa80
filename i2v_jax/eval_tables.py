"""The two tables evaluation reads: retrieval protocols (which kind of query
searches which kind of gallery, docs/method.md §1) and ranking metrics (what is
scored on each query's ranked gallery).

Evaluation (`i2v_jax.evaluation`) extracts the features the configured
protocols' kinds need, ranks each protocol's gallery for its queries, and
reports CMC plus every metric of `METRICS` per protocol: in ``results.json``,
``results.md``, the logs and TensorBoard, and as ``<protocol>/<metric>`` for
``train.best_metric``. Config validation accepts exactly these names. Adding a
protocol over the existing kinds, or a metric, is one entry here plus its test
and its docs line (docs/extending.md). No JAX here (the metrics are written for
numpy and jax.numpy alike), so the config is checked before anything compiles.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict

KINDS = ('image', 'video')
AP_MODES = ('trapezoid', 'standard')


@dataclasses.dataclass(frozen=True)
class Protocol:
  """Queries of kind ``query`` against a gallery of kind ``gallery``: an image is
  one frame of a tracklet (``eval.query_frame``), a video the whole tracklet."""
  name: str
  query: str
  gallery: str
  about: str


PROTOCOLS: Dict[str, Protocol] = {p.name: p for p in (
    Protocol('i2v', 'image', 'video', 'image to video: the task (one photo, tracklets)'),
    Protocol('v2v', 'video', 'video', 'video to video: the teacher\'s home ground'),
    Protocol('i2i', 'image', 'image', 'image to image: one frame each side'),
    Protocol('v2i', 'video', 'image', 'video to image: the reverse search'),
)}


@dataclasses.dataclass(frozen=True)
class Metric:
  """A per-query score in [0, 1], averaged over the queries that keep a true
  match after junk removal (the others are skipped and counted), reported in %.

  ``per_query(ranked, ap_mode, xp)`` scores one block of b queries from the
  ranks of their true matches (all a ranking metric needs; the gallery is never
  sorted). ``ranked`` holds (b, M) arrays, one column per true match, nearest
  first: ``good`` (False on the padding after a query's last match), ``rank``
  (the match's 1-based rank among the kept entries: junk is removed before
  ranking) and ``hits`` (true matches up to and including this one), and ``n``
  (b,), each query's true matches. Read ``rank``/``hits`` only where ``good``.
  ``xp`` is numpy or jax.numpy; the result is (b,) floats (any value where
  n = 0: such queries are left out).
  """
  name: str
  per_query: Callable[[Dict[str, Any], str, Any], Any]
  about: str


def average_precision(ranked, ap_mode: str, xp):
  """With p_r = hits_r / r at the kept ranks r of the true matches:
  standard AP = (1/n) Σ p_r (torchreid); trapezoid AP = (1/n) Σ (p_{r−1} + p_r) / 2
  with p_0 = 1 (the MARS evaluation kit, TKP, VKD). ``eval.ap_mode`` chooses."""
  good, rank, hits = ranked['good'], ranked['rank'], ranked['hits']
  precision = hits / xp.maximum(rank, 1.0)
  if ap_mode == 'standard':
    term = precision
  else:  # at a true match, the precision one rank earlier is (hits − 1) / (rank − 1)
    previous = xp.where(rank > 1, (hits - 1.0) / xp.maximum(rank - 1.0, 1.0), 1.0)
    term = (previous + precision) / 2
  return xp.sum(xp.where(good, term, 0.0), axis=1) / xp.maximum(ranked['n'], 1.0)


def inverse_negative_penalty(ranked, ap_mode: str, xp):
  """INP = n / (rank of the last true match) (Ye et al., TPAMI 2021): how far
  down the list the hardest true match sits."""
  del ap_mode
  last = xp.max(xp.where(ranked['good'], ranked['rank'], 0.0), axis=1)
  return ranked['n'] / xp.maximum(last, 1.0)


METRICS: Dict[str, Metric] = {m.name: m for m in (
    Metric('mAP', average_precision, 'mean average precision (eval.ap_mode)'),
    Metric('mINP', inverse_negative_penalty, 'mean inverse negative penalty'),
)}

# The config switches whose choices this module owns (`config_lib.choices` reads them).
CONFIG_CHOICES = {'eval.ap_mode': AP_MODES}
