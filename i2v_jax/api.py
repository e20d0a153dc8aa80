"""Use a trained model from Python.

    import i2v_jax
    model = i2v_jax.load('runs/mdkt_mars', checkpoint='best')
    queries = model.embed_images(['q1.jpg', 'q2.jpg'])          # (2, D)
    gallery = model.embed_tracklets([['t1_0.jpg', 't1_1.jpg'], frames_of_t2])  # (2, D)
    distances = pairwise_distance(queries, gallery, 'cosine', xp=np)  # i2v_jax.distances

Images (paths, encoded bytes (JPEG, PNG, ...) or uint8 arrays of any size) are
prepared exactly as evaluation prepares them (decode, antialiased bilinear resize to
the run's input size, ImageNet normalisation) and encoded by the network evaluation
uses for images (the student); tracklets by ``eval.gallery_encoder``'s network in
chunks of ``eval.clip_len`` frames, averaged weighted by their frames, as evaluation
does. Only the networks' weights are read from the checkpoint (no optimizer state).
Features are ``eval.feature`` (before the BN-neck by default); L2-normalise them for
cosine ranking.
"""

from __future__ import annotations

import dataclasses
import io
import os
from typing import Dict, Sequence, Union

import numpy as np
from PIL import Image

from i2v_jax import checkpoint as checkpoint_lib
from i2v_jax import config_lib, input_pipeline
from i2v_jax.errors import UserError
from i2v_jax.evaluation import features as features_lib

Frame = Union[str, os.PathLike, bytes, np.ndarray]


class NotAnImage(UserError, ValueError):
  """A query or gallery file that does not decode as an image."""


@dataclasses.dataclass
class Model:
  """A trained run's networks, ready to embed images and tracklets."""
  config: object
  variables: Dict[str, Dict[str, object]]  # network -> {'params', 'batch_stats'}
  num_classes: int
  checkpoint: str  # 'best', 'latest' or a step
  model_id: str = ''  # the weights' identity (`checkpoint.model_id`): what a gallery file records

  def __post_init__(self):
    self.encoders = features_lib.encoders(self.config)
    self._fns = features_lib.encode_fns(self.config, self.num_classes)

  def prepare(self, frame: Frame) -> np.ndarray:
    """One frame -> (H, W, 3) float32 as evaluation feeds it.

    Raises:
      NotAnImage (a user error, one line) for a file or bytes that do not decode.
    """
    inp = self.config.input
    name = os.fspath(frame) if isinstance(frame, (str, os.PathLike)) else 'the image bytes'
    if isinstance(frame, (str, os.PathLike)):
      with open(frame, 'rb') as f:
        frame = f.read()
    try:
      if isinstance(frame, bytes) and frame[:2] == b'\xff\xd8':  # JPEG: as evaluation decodes
        return np.asarray(input_pipeline.decode_frame(frame, inp.height, inp.width,
                                                      inp.normalize))
      if isinstance(frame, bytes):  # PNG, BMP, GIF, WebP, ...
        with Image.open(io.BytesIO(frame)) as image:
          frame = np.asarray(image.convert('RGB'))
    except Exception as e:  # PIL and TensorFlow raise many kinds
      raise NotAnImage(f'{name}: not a readable image ({type(e).__name__}); pass a JPEG, '
                       'PNG, BMP, GIF or WebP file') from None
    array = np.asarray(frame)
    if array.ndim != 3 or array.shape[-1] != 3:
      raise ValueError(f'an image array must be (H, W, 3) uint8, got {array.shape} '
                       f'{array.dtype}')
    return np.asarray(input_pipeline.prepare_image(array, inp.height, inp.width,
                                                   inp.normalize))

  def _encode(self, network: str, chunks: np.ndarray, mask: np.ndarray):
    """(N, C, H, W, 3) chunks -> (N, D) features, (N,) weights, in fixed-size batches."""
    batch = self.config.eval.batch_size
    n = len(chunks)
    pad = -n % batch
    chunks = np.concatenate([chunks, np.zeros((pad,) + chunks.shape[1:], chunks.dtype)])
    mask = np.concatenate([mask, np.zeros((pad,) + mask.shape[1:], bool)])
    feats, weights = [], []
    for s in range(0, len(chunks), batch):
      f, w = self._fns[network](self.variables[network], chunks[s:s + batch],
                                mask[s:s + batch])
      feats.append(np.asarray(f))
      weights.append(np.asarray(w))
    return np.concatenate(feats)[:n], np.concatenate(weights)[:n]

  def embed_images(self, images: Union[Sequence[Frame], np.ndarray]) -> np.ndarray:
    """(N, D) float32 features of N images (the I2V / I2I query side)."""
    frames = np.stack([self.prepare(x) for x in images])[:, None]
    features, _ = self._encode(self.encoders['image'], frames,
                               np.ones(frames.shape[:2], bool))
    return features.astype(np.float32)

  def embed_tracklets(self, tracklets: Sequence[Sequence[Frame]]) -> np.ndarray:
    """(N, D) float32 features of N tracklets (lists of frames, in temporal order)."""
    ev = self.config.eval
    rows = [{'num_frames': len(t)} for t in tracklets]
    if any(r['num_frames'] == 0 for r in rows):
      raise ValueError('a tracklet has no frames')
    plan = input_pipeline.eval_chunks(rows, mode='video', clip_len=ev.clip_len,
                                      max_frames=ev.max_frames)
    inp = self.config.input
    blank = np.zeros((inp.height, inp.width, 3), np.float32)
    chunks = np.stack([np.stack([self.prepare(tracklets[row][i]) if i >= 0 else blank
                                 for i in frames]) for row, frames in plan])
    mask = np.stack([frames >= 0 for _, frames in plan])
    features, weights = self._encode(self.encoders['video'], chunks, mask)
    sums = np.zeros((len(tracklets), features.shape[1]))
    totals = np.zeros(len(tracklets))
    for (row, _), f, w in zip(plan, features, weights):
      sums[row] += f * w
      totals[row] += w
    return (sums / np.maximum(totals, 1.0)[:, None]).astype(np.float32)


def load(workdir: str, checkpoint: str = 'best') -> Model:
  """The networks of a trained run (``workdir``): its ``config.json`` and the
  ``checkpoint`` ('best', 'latest' or a step) weights of the networks it uses."""
  config = config_lib.load_saved(workdir)
  needed = set(features_lib.encoders(config).values())
  variables = {net: checkpoint_lib.load_network(workdir, net, str(checkpoint))
               for net in sorted(needed)}
  kernel = next(iter(variables.values()))['params']['head']['classifier']['kernel']
  return Model(config=config, variables=variables, num_classes=int(kernel.shape[-1]),
               checkpoint=str(checkpoint),
               model_id=checkpoint_lib.model_id(workdir, str(checkpoint)))
