"""Synthetic person-like tracklets: the embedded benchmark (SPEC §7).

Each identity has a fixed appearance: colours of head, top, bottom and shoes
drawn from a small shared palette (so one colour rarely identifies anyone), a
texture on the top (stripes: none / horizontal / vertical, with a frequency),
an optional bag on one side, and a body shape (width, leg length). Each camera
has its own colour gains, brightness, background and viewpoint (offset, scale).
Within a tracklet every frame changes pose (leg and arm phase), scale and
position, and about half the frames are partly occluded by a random-coloured
block — so a single frame often hides what tells two identities apart, while
the tracklet as a whole shows it. Everything is a pure function of the seed.

Protocol: train ids and test ids are disjoint. Each identity is seen by
``cams_per_id`` of the ``num_cameras`` cameras, one tracklet per camera. For each
test id one tracklet is the query; the gallery holds all test tracklets (the
query's own is removed by the same-id-same-camera junk rule, as on Duke).
"""

from __future__ import annotations

import dataclasses
import io
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image

from data_prep.writer import train_labels
from i2v_jax.records import Tracklet

PALETTE = np.array([
    [200, 30, 30], [30, 160, 40], [40, 60, 200], [220, 200, 40], [240, 240, 240],
    [30, 30, 30], [130, 70, 160], [230, 120, 30], [90, 160, 200], [140, 100, 60],
], np.float32)

PROTOCOL = {
    'query': 'one tracklet per test id; I2V uses its first frame',
    'gallery': 'every test tracklet (the query own tracklet is junk)',
    'junk': 'same pid and same camera as the query',
}


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
  num_train_ids: int = 64
  num_test_ids: int = 48
  num_cameras: int = 4
  cams_per_id: int = 3
  min_frames: int = 8
  max_frames: int = 24
  height: int = 128
  width: int = 64
  occlusion_prob: float = 0.5
  seed: int = 0


def _identity(rng: np.random.Generator) -> Dict[str, object]:
  colours = rng.choice(len(PALETTE), size=4)  # head, top, bottom, shoes
  return {
      'colours': PALETTE[colours] + rng.normal(0, 8, (4, 3)),
      'stripes': int(rng.integers(3)),  # 0 none, 1 horizontal, 2 vertical
      'stripe_freq': float(rng.uniform(3, 7)),
      'stripe_colour': PALETTE[rng.integers(len(PALETTE))],
      'bag': int(rng.integers(3)),  # 0 none, 1 left, 2 right
      'bag_colour': PALETTE[rng.integers(len(PALETTE))],
      'width': float(rng.uniform(0.28, 0.42)),
      'legs': float(rng.uniform(0.38, 0.5)),
  }


def _camera(rng: np.random.Generator) -> Dict[str, object]:
  return {
      'gain': rng.uniform(0.75, 1.25, 3),
      'brightness': float(rng.uniform(-25, 25)),
      'background': rng.uniform(60, 200, 3),
      'gradient': rng.uniform(-60, 60, 3),
      'offset': float(rng.uniform(-0.08, 0.08)),
      'scale': float(rng.uniform(0.85, 1.1)),
  }


def render(ident, camera, rng: np.random.Generator, height: int, width: int,
           occlusion_prob: float) -> np.ndarray:
  """One (H, W, 3) uint8 frame of ``ident`` seen by ``camera``."""
  y, x = np.mgrid[0:height, 0:width].astype(np.float32)
  y, x = y / height, x / width
  img = camera['background'] + camera['gradient'] * y[..., None]
  img = img + rng.normal(0, 6, (height, width, 3))
  scale = camera['scale'] * rng.uniform(0.9, 1.1)
  cx = 0.5 + camera['offset'] + rng.normal(0, 0.03)
  top_y = 0.5 - 0.45 * scale + rng.normal(0, 0.02)
  u = (x - cx) / scale   # body coordinates: u across, v down in [0, 1]
  v = (y - top_y) / (0.9 * scale)
  half = ident['width'] / 2
  phase = rng.uniform(0, 2 * np.pi)
  head, torso_end = 0.16, 1.0 - ident['legs']
  colours = ident['colours']

  def paint(mask, colour):
    nonlocal img
    img = np.where(mask[..., None], colour, img)

  paint(((u / 0.09) ** 2 + ((v - head / 2) / (head / 2)) ** 2) <= 1, colours[0])
  torso = (np.abs(u) <= half) & (v > head) & (v <= torso_end)
  top = np.broadcast_to(colours[1], img.shape)
  if ident['stripes']:
    coord = v if ident['stripes'] == 1 else u
    band = np.sin(coord * ident['stripe_freq'] * 2 * np.pi) > 0.3
    top = np.where(band[..., None], ident['stripe_colour'], top)
  img = np.where(torso[..., None], top, img)
  for side in (-1, 1):  # arms swing in anti-phase
    shift = 0.06 * np.sin(phase) * side
    arm = (np.abs(u - side * (half + 0.05) - shift * (v - head)) <= 0.045) & \
          (v > head + 0.02) & (v <= torso_end - 0.05)
    paint(arm, colours[1] * 0.85)
    swing = 0.12 * np.sin(phase) * side * (v - torso_end)
    leg = (np.abs(u - side * half / 2 - swing) <= half / 2.2) & \
          (v > torso_end) & (v <= 0.96)
    paint(leg, colours[2])
    shoe = (np.abs(u - side * half / 2 - 0.12 * np.sin(phase) * side * (1 - torso_end)) <= half / 2) & \
           (v > 0.96) & (v <= 1.0)
    paint(shoe, colours[3])
  if ident['bag']:
    side = -1 if ident['bag'] == 1 else 1
    bag = (np.abs(u - side * (half + 0.1)) <= 0.08) & (v > 0.35) & (v <= 0.6)
    paint(bag, ident['bag_colour'])
  if rng.uniform() < occlusion_prob:  # a block hides part of the body
    kind = rng.integers(3)
    extent = rng.uniform(0.35, 0.65)
    colour = rng.uniform(20, 235, 3)
    if kind == 0:
      mask = y > 1 - extent
    elif kind == 1:
      mask = x < extent * 0.8
    else:
      mask = x > 1 - extent * 0.8
    paint(mask, colour)
  img = img * camera['gain'] + camera['brightness']
  return np.clip(img, 0, 255).astype(np.uint8)


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(frame).save(buf, format='JPEG', quality=quality)
  return buf.getvalue()


def generate(spec: SyntheticSpec) -> Tuple[Dict[str, List[Tracklet]], Dict[str, object]]:
  """Renders every tracklet; returns (splits, protocol) for the writer."""
  root = np.random.default_rng(spec.seed)
  cameras = [_camera(np.random.default_rng([spec.seed, 1, c]))
             for c in range(spec.num_cameras)]
  cams_per_id = min(spec.cams_per_id, spec.num_cameras)
  splits: Dict[str, List[Tracklet]] = {'train': [], 'query': [], 'gallery': []}
  num_ids = spec.num_train_ids + spec.num_test_ids
  for pid in range(1, num_ids + 1):
    ident = _identity(np.random.default_rng([spec.seed, 2, pid]))
    cams = np.sort(root.choice(spec.num_cameras, cams_per_id, replace=False))
    tracklets = []
    for cam in cams:
      rng = np.random.default_rng([spec.seed, 3, pid, cam])
      n = int(rng.integers(spec.min_frames, spec.max_frames + 1))
      frames = tuple(encode_jpeg(render(ident, cameras[cam], rng, spec.height,
                                        spec.width, spec.occlusion_prob))
                     for _ in range(n))
      tracklets.append(Tracklet(name=f'{pid:04d}C{cam + 1}', pid=pid,
                                camid=int(cam) + 1, frames=frames))
    if pid <= spec.num_train_ids:
      splits['train'] += tracklets
    else:
      splits['query'].append(tracklets[int(root.integers(len(tracklets)))])
      splits['gallery'] += tracklets
  splits['train'] = train_labels(splits['train'])
  return splits, dict(PROTOCOL, spec=dataclasses.asdict(spec))
