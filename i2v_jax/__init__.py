"""i2v-jax: image-to-video ReID by mutual discriminative knowledge transfer.

``i2v_jax.load(workdir, checkpoint='best')`` returns a trained run's `api.Model`
(``embed_images``, ``embed_tracklets``); see ``i2v_jax/api.py``.
"""


def __getattr__(name):
  # Imported on first use, so that `import i2v_jax.records` (data preparation,
  # config checks) does not pay for jax, flax and tensorflow.
  if name == 'load':
    from i2v_jax.api import load
    return load
  raise AttributeError(f'module i2v_jax has no attribute {name!r}')
