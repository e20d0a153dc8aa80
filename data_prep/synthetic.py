"""Synthetic person-like tracklets: the embedded benchmark (docs/method.md §7).

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
query's own is removed by the same-id-same-camera junk rule, as on Duke) and
``num_distractors`` one-camera tracklets of other people with pid 0 (as MARS's
distractors: ordinary negatives).

Identity namespaces. Identity p's appearance is drawn from the stream
``[seed, 2, id_offset + p]`` and camera c's from ``[seed, 1, id_offset + c]``:
a pool built with another ``id_offset`` (the pre-training pool, `SPECS`) shares
no identity or camera with the benchmark, while coming from the same family.

`SPECS` names the settings in use: ``small`` (the quickstart and tests),
``benchmark`` (docs/benchmark.md; frozen) and ``pretrain`` (the synthetic
stand-in for ImageNet: many identities and cameras, short tracklets).
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
  occlusion_max: float = 0.65     # largest share of the frame an occluder covers
  frame_jitter: float = 1.0       # x the per-frame scale / position change
  num_distractors: int = 0        # gallery tracklets of pid 0
  id_offset: int = 0              # identity / camera namespace (see module doc)
  seed: int = 0


# Frozen once, before any method was compared on it: 300 test ids
# seen by 3 of 6 cameras, 300 distractors, heavier occlusion and pose change.
BENCHMARK = SyntheticSpec(num_train_ids=128, num_test_ids=300, num_cameras=6,
                          cams_per_id=3, min_frames=8, max_frames=24,
                          occlusion_prob=0.7, occlusion_max=0.75, frame_jitter=1.5,
                          num_distractors=300, seed=0)
PRETRAIN = SyntheticSpec(num_train_ids=512, num_test_ids=32, num_cameras=8,
                         cams_per_id=4, min_frames=4, max_frames=8,
                         occlusion_prob=0.7, occlusion_max=0.75, frame_jitter=1.5,
                         id_offset=1_000_000, seed=0)
SPECS = {'small': SyntheticSpec(), 'benchmark': BENCHMARK, 'pretrain': PRETRAIN}


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
           occlusion_prob: float, occlusion_max: float = 0.65,
           frame_jitter: float = 1.0) -> np.ndarray:
  """One (H, W, 3) uint8 frame of ``ident`` seen by ``camera``."""
  y, x = np.mgrid[0:height, 0:width].astype(np.float32)
  y, x = y / height, x / width
  img = camera['background'] + camera['gradient'] * y[..., None]
  img = img + rng.normal(0, 6, (height, width, 3))
  scale = camera['scale'] * (1.0 + frame_jitter * rng.uniform(-0.1, 0.1))
  cx = 0.5 + camera['offset'] + rng.normal(0, 0.03 * frame_jitter)
  top_y = 0.5 - 0.45 * scale + rng.normal(0, 0.02 * frame_jitter)
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
    extent = rng.uniform(0.35, occlusion_max)
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


def appearances(spec: SyntheticSpec) -> Dict[str, list]:
  """Without rendering: the appearance of every identity (train + test ids, then
  distractors) and every camera of ``spec``, drawn exactly as `generate` draws them."""
  off = spec.id_offset
  ids = [_identity(np.random.default_rng([spec.seed, 2, off + pid]))
         for pid in range(1, spec.num_train_ids + spec.num_test_ids + 1)]
  ids += [_identity(np.random.default_rng([spec.seed, 4, off + d]))
          for d in range(spec.num_distractors)]
  cams = [_camera(np.random.default_rng([spec.seed, 1, off + c]))
          for c in range(spec.num_cameras)]
  return {'identities': ids, 'cameras': cams}


def generate(spec: SyntheticSpec) -> Tuple[Dict[str, List[Tracklet]], Dict[str, object]]:
  """Renders every tracklet; returns (splits, protocol) for the writer."""
  off = spec.id_offset
  root = np.random.default_rng(spec.seed if not off else [spec.seed, off])
  cameras = [_camera(np.random.default_rng([spec.seed, 1, off + c]))
             for c in range(spec.num_cameras)]
  cams_per_id = min(spec.cams_per_id, spec.num_cameras)
  splits: Dict[str, List[Tracklet]] = {'train': [], 'query': [], 'gallery': []}
  num_ids = spec.num_train_ids + spec.num_test_ids

  def tracklet(ident, key, cam, name, pid):
    rng = np.random.default_rng(key)
    n = int(rng.integers(spec.min_frames, spec.max_frames + 1))
    frames = tuple(encode_jpeg(render(ident, cameras[cam], rng, spec.height, spec.width,
                                      spec.occlusion_prob, spec.occlusion_max,
                                      spec.frame_jitter))
                   for _ in range(n))
    return Tracklet(name=name, pid=pid, camid=int(cam) + 1, frames=frames)

  for pid in range(1, num_ids + 1):
    ident = _identity(np.random.default_rng([spec.seed, 2, off + pid]))
    cams = np.sort(root.choice(spec.num_cameras, cams_per_id, replace=False))
    tracklets = [tracklet(ident, [spec.seed, 3, off + pid, cam], cam,
                          f'{pid:04d}C{cam + 1}', pid) for cam in cams]
    if pid <= spec.num_train_ids:
      splits['train'] += tracklets
    else:
      splits['query'].append(tracklets[int(root.integers(len(tracklets)))])
      splits['gallery'] += tracklets
  for d in range(spec.num_distractors):  # people seen once, not among the test ids
    ident = _identity(np.random.default_rng([spec.seed, 4, off + d]))
    cam = int(root.integers(spec.num_cameras))
    splits['gallery'].append(tracklet(ident, [spec.seed, 5, off + d], cam,
                                      f'0000D{d:05d}C{cam + 1}', 0))
  splits['train'] = train_labels(splits['train'])
  return splits, dict(PROTOCOL, spec=dataclasses.asdict(spec))
