r"""Images/s of the exported student (StableHLO, TF SavedModel, ONNX) beside the project's jitted encoder.

    python bench/export_latency.py [--width 64] [--height 256 --img_width 128] [--runs 5]

Trains nothing: a student of the given width and the run's input size, random
weights, is saved as a one-step run's checkpoint would be and exported with
`i2v_jax.export_model` (the same path a trained run takes); then both paths
embed uint8 crops at batch 1 and 64: the StableHLO file through
`jax.export.deserialize(...).call` (what a server with jax alone runs), the TF
SavedModel through its `serving_default` signature (what TF Serving runs), the
ONNX file through ONNX Runtime's CPU provider (when the deploy extra and jax2onnx
are installed: README), and `features.make_encode_fn` (the jitted encoder
evaluation uses, given float frames already scaled and normalised). Median of --runs after a warm-up; images/s
and each file's ratio to the jitted encoder, in one process.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--width', type=int, default=64, help='ResNet base width (64: ResNet-50)')
  p.add_argument('--height', type=int, default=256)
  p.add_argument('--img_width', type=int, default=128)
  p.add_argument('--runs', type=int, default=5)
  args = p.parse_args()
  import jax
  import jax.numpy as jnp
  from configs import base
  from i2v_jax import export_model, input_pipeline
  from i2v_jax.evaluation import features as features_lib
  from i2v_jax.models import build_models
  config = base.get_config('preset=student_only')
  config.unlock()
  config.model.width = args.width
  config.input.height, config.input.width = args.height, args.img_width
  num_classes = 625
  _, student = build_models(config.model, num_classes)
  x = jnp.zeros((1, args.height, args.img_width, 3))
  variables = jax.jit(lambda r: student.init(r, x, train=False))(jax.random.key(0))
  variables = {'params': variables['params'], 'batch_stats': variables['batch_stats']}
  served = export_model.serving_fn(config, num_classes, 'student', variables,
                                   (args.height, args.img_width), clips=False)
  import tensorflow as tf
  batch = jax.export.symbolic_shape('batch')[0]
  spec = [jax.ShapeDtypeStruct((batch, args.height, args.img_width, 3), np.uint8)]
  with tempfile.TemporaryDirectory() as tmp:  # the writers export_model uses
    export_model.WRITERS['stablehlo'](served, spec, os.path.join(tmp, 'student.stablehlo'))
    export_model.WRITERS['savedmodel'](served, spec, os.path.join(tmp, 'student.savedmodel'))
    try:
      export_model._check_converter('onnx')
      import onnxruntime as ort
      export_model.WRITERS['onnx'](served, spec, os.path.join(tmp, 'student.onnx'))
      session = ort.InferenceSession(os.path.join(tmp, 'student.onnx'),
                                     providers=['CPUExecutionProvider'])
      onnx_note = f'onnxruntime {ort.__version__}'
    except (export_model.ExportError, ImportError) as e:
      session, onnx_note = None, f'no ONNX ({e})'
    with open(os.path.join(tmp, 'student.stablehlo'), 'rb') as f:
      model = jax.export.deserialize(f.read())
    serve = tf.saved_model.load(os.path.join(tmp, 'student.savedmodel')).signatures[
        'serving_default']
  encode = features_lib.make_encode_fn(config, num_classes, 'student')
  rng = np.random.default_rng(0)
  print(f'student width {args.width} at {args.height}x{args.img_width}, '
        f'{jax.devices()[0].device_kind}, jax {jax.__version__}, tensorflow {tf.__version__}, '
        f'{onnx_note}', flush=True)
  for n in (1, 64):
    crops = rng.integers(0, 256, (n, args.height, args.img_width, 3), dtype=np.uint8)
    frames = np.asarray(input_pipeline.prepare_image(crops.astype(np.float32),
                                                     args.height, args.img_width))[:, None]
    mask = np.ones((n, 1), bool)
    timings = {}
    paths = (('jitted encoder (float frames in)',
              lambda frames=frames, mask=mask: encode(variables, frames, mask)[0]),
             ('StableHLO file (uint8 in)', lambda crops=crops: model.call(crops)),
             ('TF SavedModel (uint8 in)',
              lambda crops=crops: serve(images=tf.constant(crops))['embeddings'].numpy()))
    if session is not None:
      paths += (('ONNX file, ONNX Runtime (uint8 in)',
                 lambda crops=crops: session.run(['embeddings'], {'images': crops})[0]),)
    for name, fn in paths:
      jax.block_until_ready(fn())
      times = []
      for _ in range(args.runs):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
      timings[name] = statistics.median(times)
    jitted = timings['jitted encoder (float frames in)']
    for name, t in timings.items():
      print(f'batch {n:3d}: {name:34s} {n / t:8.1f} images/s ({1e3 * t:8.2f} ms a batch)'
            f'  {jitted / t:.2f}x the jitted encoder', flush=True)


if __name__ == '__main__':
  main()
