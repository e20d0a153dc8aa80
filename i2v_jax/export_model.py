r"""A trained network as a portable model file, run without i2v-jax.

    python -m i2v_jax.export_model --workdir=runs/mdkt_mars --network=student \
        --out=exported/ [--format=stablehlo|savedmodel|onnx] [--checkpoint=best] \
        [--input_size=256x128|any]

writes one self-contained model (weights inside, batch dimension symbolic) and
``<network>.json`` beside it (the run, the checkpoint step and its sha256
record, the model's sha256, the input contract, the output and the distance to
rank it with):

``stablehlo``: ``<network>.stablehlo``, `jax.export` serialised. Anyone with
``jax`` (CPU, GPU or TPU; no i2v-jax, no flax) runs it::

    import jax, numpy as np
    model = jax.export.deserialize(open('student.stablehlo', 'rb').read())
    embeddings = np.asarray(model.call(crops))   # crops: (N, 256, 128, 3) uint8 RGB

``savedmodel``: ``<network>.savedmodel/``, a TF SavedModel (`jax2tf`: the same
StableHLO inside an ``XlaCallModule`` op) with a ``serving_default`` signature
``images`` (or ``clips`` and ``valid``) -> ``embeddings``, for TF Serving or
TensorFlow alone::

    import tensorflow as tf
    serve = tf.saved_model.load('student.savedmodel').signatures['serving_default']
    embeddings = serve(images=tf.constant(crops))['embeddings'].numpy()

Input: uint8 RGB, ``(N, H, W, 3)`` crops for the image network, ``(N, T, H, W, 3)``
clips for the video network, ``H x W`` = ``--input_size`` (default the run's
``input.height x input.width``; another size is resized inside, bilinear with
antialiasing; ``any``: height and width symbolic like the batch, each call's
crops resized inside, which for crops at the run's size changes nothing).
Output: ``(N, D)`` float32, the feature evaluation ranks with
(``eval.feature``), L2-normalised when ``eval.distance`` is cosine (so a dot
product ranks as evaluation does) and as it is for euclidean. The backbone's
``.npz`` for initialising another run stays ``python -m i2v_jax.models.export``.

``onnx``: ``<network>.onnx``, one file (weights inside) for ONNX Runtime, TensorRT
or OpenVINO, converted by jax2onnx from the same computation's jaxpr; inputs
``images`` (or ``clips`` and ``valid``), output ``embeddings``, batch named ``N``::

    import onnxruntime as ort
    session = ort.InferenceSession('student.onnx')
    embeddings = session.run(['embeddings'], {'images': crops})[0]

It needs the ``deploy`` extra and jax2onnx installed without its declared
dependencies (it declares an older orbax-checkpoint than the project's, which
the converter never imports)::

    pip install -e '.[deploy]' && pip install --no-deps jax2onnx==0.17.1
"""

from __future__ import annotations

import hashlib
import os
import sys
from typing import Dict, Optional, Tuple, Union

import numpy as np

from i2v_jax import atomic, checkpoint, command_line, config_lib, input_pipeline
from i2v_jax.errors import UserError
from i2v_jax.evaluation import features as features_lib
from i2v_jax.run_folder import RunFolder

PLATFORMS = ('cpu', 'cuda', 'tpu')


class ExportError(UserError):
  """Bad input to the exporter: the message names the flag and the fix."""


def serving_fn(config, num_classes: int, network: str, variables,
               input_size: Optional[Tuple[int, int]], clips: bool):
  """The exported computation, exactly as evaluation encodes
  (`features.make_encode_fn`), with `input_pipeline.prepare_image`'s scaling and
  normalisation (and, for another crop size or ``input_size=None``, any size, a
  resize) inside:

    images: uint8 (N, h, w, 3) -> (N, D) float32
    clips:  uint8 (N, T, h, w, 3), valid (N, T) bool -> (N, D) float32, the clip's
            feature over its valid frames (the teacher's masked clip feature, or
            the student's frame features averaged), as evaluation's chunks.
  """
  import jax
  import jax.numpy as jnp
  from i2v_jax.distances import l2_normalize
  encode = features_lib.make_encode_fn(config, num_classes, network)
  inp = config.input
  mean = jnp.asarray(input_pipeline.IMAGENET_MEAN, jnp.float32)
  std = jnp.asarray(input_pipeline.IMAGENET_STD, jnp.float32)

  def embed(frames, valid):
    x = frames.astype(jnp.float32)
    if input_size is None or tuple(input_size) != (inp.height, inp.width):
      x = jax.image.resize(x, x.shape[:2] + (inp.height, inp.width, 3), 'bilinear',
                           antialias=True)
    x = x / 255.0
    if inp.normalize:
      x = (x - mean) / std
    features, _ = encode(variables, x, valid)
    return l2_normalize(features) if config.eval.distance == 'cosine' else features

  if clips:
    return embed
  return lambda images: embed(images[:, None], jnp.ones(images.shape[:1] + (1,), bool))


def export(workdir: str, network: str, out_dir: str, which: str = 'best',
           input_size: Union[Tuple[int, int], str, None] = None, fmt: str = 'stablehlo',
           inputs: str = '', clip_len: Optional[int] = None) -> Dict[str, object]:
  """Writes ``<out_dir>/<name>.<fmt>`` and its ``.json`` (name: the network, with
  ``_clips`` for the student on clips); returns the metadata. ``inputs``:
  ``images`` or ``clips`` (default: images for the student, clips for the teacher).

  Raises:
    ExportError (or the checkpoint's own one-line errors) before anything is written.
  """
  import jax
  if fmt not in FORMATS:
    raise ExportError(f'--format={fmt}: choose one of {", ".join(FORMATS)}')
  if network not in ('student', 'teacher'):
    raise ExportError(f'--network={network}: choose student or teacher')
  inputs = inputs or ('clips' if network == 'teacher' else 'images')
  if inputs not in ('images', 'clips'):
    raise ExportError(f'--inputs={inputs}: choose images or clips')
  _check_converter(fmt)
  run = RunFolder(workdir)
  if not os.path.isfile(run.config):
    raise ExportError(f'--workdir={workdir}: no trained run there (no config.json)')
  config = config_lib.load_saved(workdir)
  if network not in config.networks:
    raise ExportError(f'--network={network}: the run has no {network} (networks: '
                      f'{", ".join(config.networks)})')
  variables = checkpoint.load_network(workdir, network, which)  # verified, one line if not
  step = checkpoint.named_step(workdir, which)
  num_classes = int(variables['params']['head']['classifier']['kernel'].shape[-1])
  inp = config.input
  any_size = input_size == 'any'
  size = None if any_size else tuple(input_size or (inp.height, inp.width))
  clips = inputs == 'clips'
  t = clip_len or config.eval.clip_len
  batch, *spatial = jax.export.symbolic_shape('batch, height, width' if any_size else 'batch')
  spatial = tuple(spatial) if any_size else size
  args = ([jax.ShapeDtypeStruct((batch, t) + spatial + (3,), np.uint8),
           jax.ShapeDtypeStruct((batch, t), np.bool_)] if clips else
          [jax.ShapeDtypeStruct((batch,) + spatial + (3,), np.uint8)])
  fn = serving_fn(config, num_classes, network, variables, size, clips)
  name = network + ('_clips' if clips and network == 'student' else '')
  path = os.path.join(out_dir, f'{name}.{fmt}')
  os.makedirs(out_dir, exist_ok=True)
  written = WRITERS[fmt](fn, args, path)
  shown = ['H', 'W'] if any_size else list(size)
  meta = {
      'format': written['format'],
      'run': os.path.abspath(workdir), 'network': network, 'checkpoint': which,
      'checkpoint_step': step, 'checkpoint_sha256_record': checkpoint.record_sha256(workdir, which, step),
      'file_sha256': written['sha256'],
      'input': {'dtype': 'uint8', 'layout': 'RGB', 'shape': (
          ['N', t, *shown, 3] if clips else ['N', *shown, 3]),
          'valid': ['N', t] if clips else None,
          'resized_inside_to': [inp.height, inp.width] if size != (inp.height, inp.width)
          else None, 'normalisation': 'x / 255, then ImageNet mean/std' if inp.normalize
          else 'x / 255'},
      'output': {'shape': ['N', written['dim']], 'dtype': 'float32',
                 'feature': config.eval.feature,
                 'l2_normalised': config.eval.distance == 'cosine'},
      'distance': config.eval.distance,
      'platforms': written.get('platforms', list(PLATFORMS)),
  }
  atomic.write_json(meta, os.path.join(out_dir, f'{name}.json'))
  return meta | {'path': path}


def _write_stablehlo(fn, args, path: str) -> Dict[str, object]:
  """``fn`` at ``args`` (abstract, batch symbolic) as serialised `jax.export`."""
  import jax
  exported = jax.export.export(jax.jit(fn), platforms=PLATFORMS)(*args)
  data = bytes(exported.serialize())

  def write(tmp):
    with open(tmp, 'wb') as f:
      f.write(data)
  atomic.write_with(write, path)
  return {'format': 'stablehlo (jax.export, serialisation version '
                    f'{exported.calling_convention_version})',
          'sha256': hashlib.sha256(data).hexdigest(),
          'dim': int(exported.out_avals[0].shape[-1])}


def _write_savedmodel(fn, args, path: str) -> Dict[str, object]:
  """``fn`` as a TF SavedModel folder: `jax2tf.convert` (the StableHLO inside an
  ``XlaCallModule`` op, batch polymorphic) behind a ``serving_default``
  signature: ``images`` (N, H, W, 3) uint8, or ``clips`` (N, T, H, W, 3) uint8
  and ``valid`` (N, T) bool -> ``embeddings`` (N, D) float32."""
  import jax
  import tensorflow as tf
  from jax.experimental import jax2tf
  poly = ['(b, ' + ', '.join(str(d) for d in a.shape[1:]) + ')' for a in args]
  converted = jax2tf.convert(fn, polymorphic_shapes=poly,
                             native_serialization_platforms=PLATFORMS)
  spec = lambda a, name: tf.TensorSpec(
      (None,) + tuple(d if isinstance(d, int) else None for d in a.shape[1:]),
      tf.as_dtype(a.dtype), name=name)
  module = tf.Module()
  if len(args) == 2:
    module.serve = tf.function(
        lambda clips, valid: {'embeddings': converted(clips, valid)}, autograph=False,
        input_signature=[spec(args[0], 'clips'), spec(args[1], 'valid')])
  else:
    module.serve = tf.function(lambda images: {'embeddings': converted(images)},
                               autograph=False, input_signature=[spec(args[0], 'images')])
  atomic.write_folder(lambda tmp: tf.saved_model.save(
      module, tmp, signatures={'serving_default': module.serve}), path)
  dim = jax.eval_shape(fn, *[jax.ShapeDtypeStruct((1,) + tuple(a.shape[1:]), a.dtype)
                             for a in args]).shape[-1]
  return {'format': 'savedmodel (TF SavedModel via jax2tf: StableHLO in an XlaCallModule '
                    "op; signature serving_default -> 'embeddings')",
          'sha256': folder_sha256(path), 'dim': int(dim)}


def folder_sha256(path: str) -> str:
  """sha256 over a folder's files: each relative path and its bytes, in sorted order."""
  h = hashlib.sha256()
  for root, _, files in sorted(os.walk(path)):
    for f in sorted(files):
      full = os.path.join(root, f)
      h.update(os.path.relpath(full, path).encode() + b'\0')
      with open(full, 'rb') as fh:
        h.update(fh.read())
  return h.hexdigest()


def _write_onnx(fn, args, path: str) -> Dict[str, object]:
  """``fn`` as one ONNX file (opset 23, weights inside, batch dimension ``N``),
  converted by jax2onnx from ``fn``'s jaxpr as `_onnx_ready` rewrites it."""
  import logging

  import jax
  from jax2onnx import to_onnx
  closed = jax.make_jaxpr(fn)(*args)
  names = ['clips', 'valid'] if len(args) == 2 else ['images']
  # jax2onnx imports every plugin it ships and logs each one whose framework
  # (equinox, dm-pix) is not installed; none of them converts this model.
  plugins = logging.getLogger('jax2onnx.plugins.plugin_system')
  level = plugins.level
  plugins.setLevel(logging.ERROR)
  try:
    model = to_onnx(lambda *xs: _onnx_ready(closed.jaxpr, closed.consts, *xs)[0], args,
                    input_names=names, output_names=['embeddings'], return_mode='proto')
  finally:
    plugins.setLevel(level)
  data = model.SerializeToString()

  def write(tmp):
    with open(tmp, 'wb') as f:
      f.write(data)
  atomic.write_with(write, path)
  return {'format': f'onnx (jax2onnx, opset {model.opset_import[0].version}; inputs '
                    f'{", ".join(names)}, output embeddings)',
          'sha256': hashlib.sha256(data).hexdigest(),
          'dim': int(closed.out_avals[0].shape[-1]),
          'platforms': ['any ONNX runtime (tested: ONNX Runtime CPU)']}


def _onnx_ready(jaxpr, consts, *args):
  """Evaluates ``jaxpr`` (nested calls inlined) for jax2onnx to trace, with each
  ``reduce_window_max`` (the stem's max pool) spelled as the maximum of its
  window's strided slices of the input bordered with -inf: the same values
  (a maximum is exact), in ops ONNX Runtime runs. jax2onnx 0.17.1 lowers
  ``reduce_window_max`` to a MaxPool over every axis, batch and channels
  included, which ONNX Runtime refuses ("Unsupported pooling size"). Tracing
  here, outside the converter, also keeps its patches of flax's layers away."""
  from jax.extend import core as jex_core
  env = dict(zip(jaxpr.constvars, consts)) | dict(zip(jaxpr.invars, args))
  read = lambda v: v.val if isinstance(v, jex_core.Literal) else env[v]
  for eqn in jaxpr.eqns:
    ins = [read(v) for v in eqn.invars]
    if eqn.primitive.name == 'reduce_window_max':
      outs = [_max_pool_by_slices(ins[0], **eqn.params)]
    elif eqn.primitive.name in ('jit', 'pjit', 'custom_jvp_call'):
      inner = eqn.params['jaxpr' if 'jaxpr' in eqn.params else 'call_jaxpr']
      outs = _onnx_ready(inner.jaxpr, inner.consts, *ins)
    else:
      outs = eqn.primitive.bind(*ins, **eqn.primitive.get_bind_params(eqn.params))
      outs = outs if eqn.primitive.multiple_results else [outs]
    env.update(zip(eqn.outvars, outs))
  return [read(v) for v in jaxpr.outvars]


def _max_pool_by_slices(x, window_dimensions, window_strides, padding, base_dilation,
                        window_dilation):
  """``lax.reduce_window_max`` as the maximum of strided slices (undilated windows)."""
  import itertools

  from jax import lax
  if set(base_dilation) | set(window_dilation) != {1}:
    raise NotImplementedError('a dilated max pool: not in any network here')
  # -inf borders, concatenated: jax2onnx's lowering of lax.pad fails on a symbolic batch.
  inf = np.array(-np.inf, x.dtype)
  for axis, (lo, hi) in enumerate(padding):
    shape = lambda n, axis=axis, s=x.shape: s[:axis] + (n,) + s[axis + 1:]
    parts = (([lax.broadcast_in_dim(inf, shape(lo), ())] if lo else []) + [x]
             + ([lax.broadcast_in_dim(inf, shape(hi), ())] if hi else []))
    x = lax.concatenate(parts, axis) if len(parts) > 1 else x
  out = None
  for start in itertools.product(*(range(w) for w in window_dimensions)):
    limit = [s + (d - w) // st * st + 1
             for s, d, w, st in zip(start, x.shape, window_dimensions, window_strides)]
    part = lax.slice(x, start, limit, window_strides)
    out = part if out is None else lax.max(out, part)
  return out


# The one table of formats: name (also the model's file suffix) -> its writer, and
# the packages beyond the project's requirements it needs (how to install them).
WRITERS = {'stablehlo': _write_stablehlo, 'savedmodel': _write_savedmodel,
           'onnx': _write_onnx}
FORMATS = tuple(WRITERS)
CONVERTERS = {'onnx': (('jax2onnx', 'onnx', 'onnx_ir'),
                       "pip install -e '.[deploy]' && pip install --no-deps jax2onnx==0.17.1")}


def _check_converter(fmt: str) -> None:
  """One line, before anything is read or written, when ``fmt``'s converter is missing."""
  import importlib.util
  modules, how = CONVERTERS.get(fmt, ((), ''))
  missing = [m for m in modules if importlib.util.find_spec(m) is None]
  if missing:
    raise ExportError(f'--format={fmt} needs {", ".join(missing)}, not installed: {how}')


def _size(text: str) -> Union[Tuple[int, int], str, None]:
  if not text or text == 'any':
    return text or None
  h, sep, w = text.lower().partition('x')
  if not sep or not h.isdigit() or not w.isdigit() or int(h) < 1 or int(w) < 1:
    raise ExportError(f'--input_size={text}: give HEIGHTxWIDTH, e.g. 256x128, or any')
  return int(h), int(w)


def main(argv=None) -> int:
  """``argv``: the command line, the program name first (``sys.argv`` when None)."""
  from absl import flags
  fl = flags.FlagValues()
  workdir = flags.DEFINE_string('workdir', None, 'a trained run', flag_values=fl)
  network = flags.DEFINE_string('network', 'student', 'student (images) or teacher (clips)',
                                flag_values=fl)
  fmt = flags.DEFINE_string('format', 'stablehlo', f'one of {", ".join(FORMATS)}',
                            flag_values=fl)
  out = flags.DEFINE_string('out', None, 'output folder', flag_values=fl)
  which = flags.DEFINE_string('checkpoint', 'best', 'best, latest or a step', flag_values=fl)
  input_size = flags.DEFINE_string('input_size', '', 'HEIGHTxWIDTH of the crops the model '
                                   'takes (default: the run\'s input size), or any',
                                   flag_values=fl)
  inputs = flags.DEFINE_string('inputs', '', 'images or clips (default: images for the '
                               'student, clips for the teacher)', flag_values=fl)
  for name in ('workdir', 'out'):
    flags.mark_flag_as_required(name, flag_values=fl)
  command_line.parse(fl, argv, __doc__)
  try:
    meta = export(workdir.value, network.value, out.value, which.value,
                  _size(input_size.value), fmt.value, inputs.value)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'wrote {meta["path"]} and its .json: '
        f'{meta["input"]["shape"]} uint8 -> {meta["output"]["shape"]} float32 '
        f'({meta["distance"]} distance; checkpoint {which.value}, step '
        f'{meta["checkpoint_step"]})')
  return 0


if __name__ == '__main__':
  sys.exit(main())
