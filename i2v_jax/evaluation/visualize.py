"""Ranked lists as a PNG: each query with its top-k gallery entries, worst AP first.

One row per query: the query frame (blue border), then the top-k gallery entries
after junk removal (SPEC §1), green border for the query's identity, red
otherwise; each gallery tracklet is shown by its middle frame.
"""

from __future__ import annotations

import io
import os
from typing import Dict, Sequence

import numpy as np
from PIL import Image


GREEN, RED, BLUE = (0, 170, 0), (220, 0, 0), (40, 80, 220)


def worst_queries(ap: np.ndarray, num_queries: int) -> np.ndarray:
  """Rows of the ``num_queries`` queries with the lowest AP (skipped ones, NaN, left out)."""
  valid = np.flatnonzero(~np.isnan(ap))
  return valid[np.argsort(ap[valid], kind='stable')][:num_queries]


def ranked_lists(rows: Sequence[int], distmat: np.ndarray, query: Dict[str, np.ndarray],
                 gallery: Dict[str, np.ndarray], *, top: int):
  """[(query row, [(gallery row, is_match)])]: the ``top`` nearest non-junk entries.

  Args:
    rows: query rows to show; distmat: (len(rows), G) their distances to the
      gallery; query / gallery: ``pids`` and ``camids`` of every entry.
  """
  out = []
  for qi, row in zip(rows, distmat):
    same_pid = gallery['pids'] == query['pids'][qi]
    junk = same_pid & (gallery['camids'] == query['camids'][qi])
    order = [g for g in np.argsort(row, kind='stable') if not junk[g]][:top]
    out.append((int(qi), [(int(g), bool(same_pid[g])) for g in order]))
  return out


def _thumbnail(jpeg: bytes, size, color) -> Image.Image:
  image = Image.open(io.BytesIO(jpeg)).convert('RGB').resize(size)
  framed = Image.new('RGB', (size[0] + 8, size[1] + 8), color)
  framed.paste(image, (4, 4))
  return framed


def render(lists, query_reader, query_frame: Sequence[int], gallery_reader, path: str,
           size=(64, 128)) -> None:
  """Draws ``lists`` from `ranked_lists` into ``path`` (written whole, then renamed).

  ``query_reader`` / ``gallery_reader``: anything with ``frames(row)`` -> JPEG
  bytes per frame (`i2v_jax.input_pipeline.TrackletReader`);
  ``query_frame[q]``: which frame of query tracklet q is the query image.
  """
  cell_w, cell_h = size[0] + 8, size[1] + 8
  top = max((len(g) for _, g in lists), default=0)
  canvas = Image.new('RGB', ((top + 1) * (cell_w + 4) + 8, len(lists) * (cell_h + 4) + 4),
                     (255, 255, 255))
  for y, (q, ranked) in enumerate(lists):
    top_y = 4 + y * (cell_h + 4)
    canvas.paste(_thumbnail(query_reader.frames(q)[query_frame[q]], size, BLUE), (0, top_y))
    for x, (g, match) in enumerate(ranked, start=1):
      frames = gallery_reader.frames(g)
      canvas.paste(_thumbnail(frames[len(frames) // 2], size, GREEN if match else RED),
                   (8 + x * (cell_w + 4), top_y))
  tmp = path + '.tmp.png'
  canvas.save(tmp)
  os.replace(tmp, path)
