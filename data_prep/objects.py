"""Generated object categories: the ``generic`` start's pre-training pool.

The stand-in for ImageNet: a classification pool that knows nothing of
identities. It contains no person and uses nothing of `data_prep.synthetic`'s
person renderer: each category is a combination of a shape (disc, square,
triangle, star, ring, cross, bars, crescent, diamond, hexagon), a surface
texture (solid, stripes in three directions, checks, dots, a radial gradient)
and a colour family (red, green, blue, yellow, grey: 350 kinds in all), with a
main colour from its family and a second colour from the whole RGB cube. Each image is one instance of
its category: the shape at a random position, size, rotation and aspect, its
colours jittered, over a random background (flat, gradient or noise, random
colours), with random clutter (a second small shape of a random other kind)
and sensor noise. Categories differ by kind, so the task is "what object is
this", not "which individual is this".

The pool is written in the one tracklet format (`i2v_jax.records`) so the image
network trains on it with the usual input pipeline: a "tracklet" is a group of
``images_per_group`` independent instances of one category (pid = category,
camid = the group's number), ``groups_per_class`` groups per category in
``train``. Held-out groups of the same categories form ``query`` (one per
category) and ``gallery`` (two per category): the retrieval metrics of a run
on the pool, and `heldout_accuracy`'s classification accuracy, measure what
was learned on images never trained on.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
from typing import Dict, List, Tuple

import numpy as np

from PIL import Image

from data_prep.writer import train_labels
from i2v_jax.records import Tracklet

SHAPES = ('disc', 'square', 'triangle', 'star', 'ring', 'cross', 'bars', 'crescent',
          'diamond', 'hexagon')
TEXTURES = ('solid', 'stripes_h', 'stripes_v', 'stripes_d', 'checks', 'dots', 'radial')
# Colour families of a category's main colour: (low, high) RGB corners.
FAMILIES = (((150, 0, 0), (255, 90, 90)), ((0, 120, 0), (100, 255, 100)),
            ((0, 0, 140), (100, 110, 255)), ((170, 150, 0), (255, 255, 90)),
            ((60, 60, 60), (200, 200, 200)))
PROTOCOL = {
    'query': 'one held-out group of images per category',
    'gallery': 'two held-out groups per category (same categories as train)',
    'junk': 'same category and same group number as the query',
}


@dataclasses.dataclass(frozen=True)
class ObjectSpec:
  num_classes: int = 300
  groups_per_class: int = 4      # training "tracklets" per category
  images_per_group: int = 8
  height: int = 128
  width: int = 64
  clutter_prob: float = 0.5
  seed: int = 0


# Fixed before any method was compared on the generic start: 300
# categories x 32 training images, held-out 24 images per category.
GENERIC = ObjectSpec()
SPECS = {'generic': GENERIC, 'tiny': ObjectSpec(num_classes=6, groups_per_class=2,
                                                 images_per_group=4, height=32, width=16)}


def categories(spec: ObjectSpec) -> List[Dict[str, object]]:
  """Every category: a distinct (shape, texture, colour family) in a seeded
  order, with its two colours and texture frequency."""
  kinds = list(itertools.product(SHAPES, TEXTURES, range(len(FAMILIES))))
  if spec.num_classes > len(kinds):
    raise ValueError(f'ObjectSpec.num_classes={spec.num_classes}: at most {len(kinds)} '
                     'distinct categories')
  order = np.random.default_rng([spec.seed, 10]).permutation(len(kinds))
  out = []
  for c in range(spec.num_classes):
    shape, texture, family = kinds[order[c]]
    rng = np.random.default_rng([spec.seed, 11, c])
    low, high = FAMILIES[family]
    out.append({'shape': shape, 'texture': texture, 'family': family,
                'colours': np.stack([rng.uniform(low, high), rng.uniform(0, 255, 3)]),
                'frequency': float(rng.uniform(3, 8))})
  return out


def _shape_mask(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Inside test of a unit shape in its own coordinates (u, v in about [-1, 1])."""
  r = np.hypot(u, v)
  angle = np.arctan2(v, u)
  if kind == 'disc':
    return r <= 1
  if kind == 'square':
    return np.maximum(np.abs(u), np.abs(v)) <= 0.85
  if kind == 'triangle':
    return (v <= 0.8) & (np.abs(u) <= (v + 0.8) / 1.6 * 0.95)
  if kind == 'star':
    return r <= 0.55 + 0.4 * np.cos(5 * angle)
  if kind == 'ring':
    return (r <= 1) & (r >= 0.6)
  if kind == 'cross':
    return ((np.abs(u) <= 0.3) & (np.abs(v) <= 1)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 1))
  if kind == 'bars':
    return (np.abs(v) <= 1) & (np.abs(u) <= 1) & (np.sin(u * 2.5 * np.pi) > 0)
  if kind == 'crescent':
    return (r <= 1) & (np.hypot(u - 0.45, v) > 0.75)
  if kind == 'diamond':
    return np.abs(u) + np.abs(v) <= 1
  if kind == 'hexagon':
    return np.maximum(np.abs(v) * 0.866 + np.abs(u) * 0.5, np.abs(u)) <= 0.9
  raise ValueError(f'unknown shape {kind!r}')


def _texture(kind: str, u: np.ndarray, v: np.ndarray, freq: float) -> np.ndarray:
  """(H, W) bool: where the second colour shows."""
  if kind == 'solid':
    return np.zeros(u.shape, bool)
  if kind == 'stripes_h':
    return np.sin(v * freq * np.pi) > 0
  if kind == 'stripes_v':
    return np.sin(u * freq * np.pi) > 0
  if kind == 'stripes_d':
    return np.sin((u + v) * freq * np.pi * 0.7) > 0
  if kind == 'checks':
    return (np.sin(u * freq * np.pi) > 0) ^ (np.sin(v * freq * np.pi) > 0)
  if kind == 'dots':
    return (np.sin(u * freq * np.pi) * np.sin(v * freq * np.pi)) > 0.5
  if kind == 'radial':
    return np.sin(np.hypot(u, v) * freq * np.pi) > 0
  raise ValueError(f'unknown texture {kind!r}')


def _paint(img, x, y, category, rng, scale_range=(0.28, 0.45)):
  """Paints one instance of ``category`` into ``img`` (in place)."""
  h, w = img.shape[:2]
  aspect = w / h
  cx, cy = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7)
  size = rng.uniform(*scale_range)
  stretch = rng.uniform(0.8, 1.25)
  theta = rng.uniform(0, 2 * np.pi)
  dx, dy = (x - cx) * aspect, y - cy
  u = (np.cos(theta) * dx + np.sin(theta) * dy) / (size * aspect * stretch)
  v = (-np.sin(theta) * dx + np.cos(theta) * dy) / (size * aspect / stretch)
  mask = _shape_mask(category['shape'], u, v)
  colours = np.clip(category['colours'] + rng.normal(0, 12, (2, 3)), 0, 255)
  second = _texture(category['texture'], u, v, category['frequency'])
  surface = np.where(second[..., None], colours[1], colours[0])
  img[:] = np.where(mask[..., None], surface, img)


def render(category: Dict[str, object], others: List[Dict[str, object]],
           rng: np.random.Generator, height: int, width: int,
           clutter_prob: float) -> np.ndarray:
  """One (H, W, 3) uint8 image of an instance of ``category``."""
  y, x = np.mgrid[0:height, 0:width].astype(np.float32)
  y, x = y / height, x / width
  kind = rng.integers(3)
  base = rng.uniform(0, 255, 3)
  if kind == 0:
    img = np.broadcast_to(base, (height, width, 3)).copy()
  elif kind == 1:
    direction = rng.uniform(-1, 1, 2)
    img = base + rng.uniform(-80, 80, 3) * (direction[0] * x + direction[1] * y)[..., None]
  else:
    img = base + rng.normal(0, 35, (height, width, 3))
  if rng.uniform() < clutter_prob:  # a small object of another category
    _paint(img, x, y, others[int(rng.integers(len(others)))], rng, (0.1, 0.18))
  _paint(img, x, y, category, rng)
  img = img * rng.uniform(0.8, 1.2) + rng.uniform(-20, 20) + rng.normal(0, 5, img.shape)
  return np.clip(img, 0, 255).astype(np.uint8)


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format='JPEG', quality=quality)
  return buf.getvalue()


def generate(spec: ObjectSpec) -> Tuple[Dict[str, List[Tracklet]], Dict[str, object]]:
  """Renders every group; returns (splits, protocol) for the writer."""
  cats = categories(spec)
  splits: Dict[str, List[Tracklet]] = {'train': [], 'query': [], 'gallery': []}
  held_out = {'query': 1, 'gallery': 2}
  for c, category in enumerate(cats):
    pid = c + 1
    others = [o for o in cats if o['shape'] != category['shape']]
    plan = [('train', g) for g in range(spec.groups_per_class)]
    plan += [(split, spec.groups_per_class + i + (1 if split == 'gallery' else 0))
             for split, n in held_out.items() for i in range(n)]
    for split, group in plan:
      rng = np.random.default_rng([spec.seed, 12, c, group])
      frames = tuple(encode_jpeg(render(category, others, rng, spec.height, spec.width,
                                        spec.clutter_prob))
                     for _ in range(spec.images_per_group))
      splits[split].append(Tracklet(name=f'{pid:04d}G{group + 1}', pid=pid,
                                    camid=group + 1, frames=frames))
  splits['train'] = train_labels(splits['train'])
  return splits, dict(PROTOCOL, spec=dataclasses.asdict(spec))
