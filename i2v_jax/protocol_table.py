"""The one table of retrieval protocols: which kind of query searches which kind
of gallery (docs/method.md §1).

Evaluation (`i2v_jax.evaluation.protocols`) extracts the features the
configured protocols' kinds need, ranks each protocol's gallery for its queries
and reports CMC, mAP and mINP; config validation accepts exactly these names.
Adding a protocol over the existing kinds is one entry here plus its test and
its docs line (docs/extending.md). No JAX here: the config is checked before
anything is compiled.
"""

from __future__ import annotations

import dataclasses
from typing import Dict

KINDS = ('image', 'video')


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
