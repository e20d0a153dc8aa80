"""Evaluation (docs/method.md §1), one file per stage:

  features   networks -> query / gallery features (`extract_features`, `encoders`)
  metrics    distances -> CMC and every `METRICS` entry: mAP, mINP, ...
             (`reference_metrics`, `blocked_metrics`)
  protocols  I2V / V2V / I2I / V2I from those (`PROTOCOLS`), and `run`
  evaluators the table of measurements `run` makes (`EVALUATORS`): ranking,
             re-ranking, teacher-student agreement, held-out accuracy, export,
             pictures

The protocols and metrics are the tables of `i2v_jax.eval_tables`.
  report     scalars, tables, results.json / .md, .npz export
  rerank     k-reciprocal re-ranking of distance matrices
  visualize  ranked lists -> pictures

Distances are `i2v_jax.distances.pairwise_distance`, shared with the losses.
Nothing here imports the trainer or the command line.
"""

from i2v_jax.evaluation.features import (encode_fns, encoders, extract_features, make_encode_fn,
                                         network_variables)
from i2v_jax.eval_tables import AP_MODES, METRICS
from i2v_jax.evaluation.metrics import blocked_metrics, reference_metrics
from i2v_jax.evaluation.evaluators import EVALUATORS
from i2v_jax.evaluation.protocols import (PROTOCOLS, Evaluation, compute_features,
                                          protocol_metrics, run, video_query_rows)
from i2v_jax.evaluation.report import (export_features, results_table, scalar_metrics,
                                       write_results)

__all__ = [
    'AP_MODES', 'EVALUATORS', 'Evaluation', 'METRICS', 'PROTOCOLS', 'blocked_metrics', 'compute_features', 'encode_fns',
    'encoders',
    'export_features', 'extract_features', 'make_encode_fn', 'network_variables',
    'protocol_metrics', 'reference_metrics', 'results_table', 'run', 'scalar_metrics',
    'video_query_rows', 'write_results',
]
