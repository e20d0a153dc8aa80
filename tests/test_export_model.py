"""Portable model files: a trained tiny run exported as StableHLO, as a TF
SavedModel and as ONNX, each run in a fresh virtual environment that holds only
its runtime (jax and numpy; tensorflow and numpy; onnxruntime and numpy, and
openvino and numpy for the same ONNX file: no i2v_jax, no flax), on real frames of the synthetic dataset: the embeddings are
the run's, and so is its I2V mAP. Bad input to the exporter is one line, exit 2,
nothing written."""

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from i2v_jax import export_model, input_pipeline
from i2v_jax.dataset_folder import Dataset
from i2v_jax.evaluation.metrics import reference_metrics
from tests.test_trainer import tiny_config

pytestmark = pytest.mark.slow

JAX_ONLY = ('jax', 'jaxlib', 'numpy', 'flatbuffers', 'ml_dtypes', 'opt_einsum', 'scipy')
TF_ONLY = ('tensorflow-cpu', 'numpy')
ONNX_ONLY = ('onnxruntime', 'numpy')
OPENVINO_ONLY = ('openvino==2026.4.1', 'numpy')  # not a project package: pinned here


def _outside(runtime: str, banned: tuple, body: str) -> str:
  '''A script for a fresh environment: imports ``runtime``, checks that none of
  ``banned`` is importable, reads ``inputs.npz`` from the folder it is given,
  runs ``body`` (which fills ``out`` by model name, each also on a batch of one)
  and writes ``outputs.npz``.'''
  return (f'import json, sys\nimport numpy as np\n{runtime}\n'
          f'for banned in {banned!r}:\n'
          '  try:\n    __import__(banned)\n'
          "    raise SystemExit(f'{banned} is importable here')\n"
          '  except ImportError:\n    pass\n'
          "folder = sys.argv[1]\ndata = np.load(f'{folder}/inputs.npz')\nout = {}\n"
          + body +
          "np.savez(f'{folder}/outputs.npz', **out)\n"
          'print(json.dumps({k: list(v.shape) for k, v in out.items()}))\n')


RUN_EXPORTED = _outside('import jax', ('i2v_jax', 'flax', 'tensorflow'), r'''
for name, args in (('student', [data['images']]),
                   ('student_clips', [data['clips'], data['valid']])):
  with open(f'{folder}/exported/{name}.stablehlo', 'rb') as f:
    model = jax.export.deserialize(f.read())
  out[name] = np.asarray(model.call(*args))
  out[name + '_one'] = np.asarray(model.call(*[a[:1] for a in args]))  # any batch size
''')

RUN_SAVEDMODEL = _outside('import tensorflow as tf', ('i2v_jax', 'flax', 'jax'), r'''
for name, args in (('student', {'images': data['images']}),
                   ('student_clips', {'clips': data['clips'], 'valid': data['valid']})):
  serve = tf.saved_model.load(f'{folder}/saved/{name}.savedmodel').signatures['serving_default']
  out[name] = serve(**{k: tf.constant(v) for k, v in args.items()})['embeddings'].numpy()
  out[name + '_one'] = serve(**{k: tf.constant(v[:1]) for k, v in args.items()})[
      'embeddings'].numpy()
''')

RUN_ONNX = _outside('import onnxruntime as ort', ('i2v_jax', 'flax', 'jax', 'tensorflow'), r'''
for name, args in (('student', {'images': data['images']}),
                   ('student_clips', {'clips': data['clips'], 'valid': data['valid']})):
  session = ort.InferenceSession(f'{folder}/onnx/{name}.onnx',
                                 providers=['CPUExecutionProvider'])
  out[name] = session.run(['embeddings'], dict(args))[0]
  out[name + '_one'] = session.run(['embeddings'], {k: v[:1] for k, v in args.items()})[0]
''')

# OpenVINO's CPU plugin computes in bfloat16 where the processor has it unless
# told otherwise; f32 is what reproduces the run.
RUN_OPENVINO = _outside('import openvino as ov', ('i2v_jax', 'flax', 'jax', 'tensorflow',
                                                   'onnxruntime'), r'''
core = ov.Core()
for name, args in (('student', {'images': data['images']}),
                   ('student_clips', {'clips': data['clips'], 'valid': data['valid']})):
  model = core.compile_model(core.read_model(f'{folder}/onnx/{name}.onnx'), 'CPU',
                             {'INFERENCE_PRECISION_HINT': 'f32'})
  out[name] = model(dict(args))[model.output(0)]
  out[name + '_one'] = model({k: v[:1] for k, v in args.items()})[model.output(0)]
''')


@pytest.fixture(scope='module')
def run(tmp_path_factory, cli_data_dir):
  from i2v_jax import trainer
  workdir = str(tmp_path_factory.mktemp('export') / 'run')
  c = tiny_config(cli_data_dir, steps=2)
  c.eval.export = True  # features-<split>-<kind>.npz: what evaluation ranked
  trainer.train_and_log(c, workdir)
  return workdir


def _fresh_python(tmp_path_factory, name, packages):
  """A virtual environment with the project's pins of ``packages`` (or the
  pin given, ``name==version``) and what they need, nothing else; its python."""
  venv = str(tmp_path_factory.mktemp(name) / 'venv')
  subprocess.run([sys.executable, '-m', 'venv', venv], check=True)
  pins = [p if '==' in p else f'{p}=={importlib.metadata.version(p)}' for p in packages]
  install = subprocess.run([os.path.join(venv, 'bin', 'pip'), 'install', '-q', *pins],
                           capture_output=True, text=True, timeout=600)
  if install.returncode:
    pytest.skip(f'cannot install {pins} into a fresh venv: {install.stderr[-300:]}')
  return os.path.join(venv, 'bin', 'python')


@pytest.fixture(scope='module')
def jax_only_python(tmp_path_factory):
  return _fresh_python(tmp_path_factory, 'jax_only', JAX_ONLY)


@pytest.fixture(scope='module')
def tf_only_python(tmp_path_factory):
  return _fresh_python(tmp_path_factory, 'tf_only', TF_ONLY)


@pytest.fixture(scope='module')
def onnx_only_python(tmp_path_factory):
  missing = [m for m in export_model.CONVERTERS['onnx'][0] + ('onnxruntime',)
             if importlib.util.find_spec(m) is None]
  if missing:  # .ci/run installs them
    pytest.skip(f'the ONNX converter is not installed ({", ".join(missing)}): '
                f'{export_model.CONVERTERS["onnx"][1]}')
  return _fresh_python(tmp_path_factory, 'onnx_only', ONNX_ONLY)


@pytest.fixture(scope='module')
def openvino_only_python(tmp_path_factory, onnx_only_python):  # skips where that one does
  return _fresh_python(tmp_path_factory, 'openvino_only', OPENVINO_ONLY)


def _real_inputs(folder, dataset_dir, t):
  """The synthetic dataset's real frames, as a server would have them, in
  ``folder/inputs.npz``: each query's evaluation frame (the first), and each
  gallery tracklet whole (at most ``t`` frames here: one chunk, padded and masked)."""
  dataset = Dataset.open(dataset_dir)
  query = input_pipeline.TrackletReader(dataset, 'query')
  gallery = input_pipeline.TrackletReader(dataset, 'gallery')
  decode = lambda jpeg: np.asarray(input_pipeline.decode_jpeg(jpeg))
  images = np.stack([decode(query.frames(i)[0]) for i in range(len(query.rows))])
  lengths = [int(r['num_frames']) for r in gallery.rows]
  assert max(lengths) <= t
  clips = np.zeros((len(lengths), t) + images.shape[1:], np.uint8)
  valid = np.zeros((len(lengths), t), bool)
  for g, n in enumerate(lengths):
    clips[g, :n] = [decode(f) for f in gallery.frames(g)]
    valid[g, :n] = True
  np.savez(os.path.join(folder, 'inputs.npz'), images=images, clips=clips, valid=valid)


def _run_outside(python, script, folder):
  ran = subprocess.run([python, '-c', script, str(folder)], cwd=folder,
                       env={'PATH': os.environ['PATH'], 'JAX_PLATFORMS': 'cpu'},
                       capture_output=True, text=True, timeout=600)
  assert ran.returncode == 0, ran.stderr[-2000:]
  return np.load(os.path.join(folder, 'outputs.npz'))


def _check_against_the_run(got, run):
  """The outputs are the run's evaluation features (L2-normalised) to 1e-5, any
  batch size gives the same rows, and their I2V mAP is the run's to 0.01."""
  norm = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  features = {k: np.load(os.path.join(run, f'features-{k}.npz'))
              for k in ('query-image', 'gallery-video')}
  np.testing.assert_allclose(got['student'], norm(features['query-image']['features']),
                             atol=1e-5)
  np.testing.assert_allclose(got['student_clips'], norm(features['gallery-video']['features']),
                             atol=1e-5)
  np.testing.assert_allclose(got['student_one'], got['student'][:1], atol=1e-6)
  q, g = features['query-image'], features['gallery-video']
  mine = reference_metrics(1.0 - got['student'] @ got['student_clips'].T, q['pids'], g['pids'],
                           q['camids'], g['camids'])
  results = json.load(open(os.path.join(run, 'results.json')))
  reported = results['protocols']['i2v']['mAP']
  assert abs(100 * mine['mAP'] - 100 * reported) < 0.01, (mine['mAP'], reported)


def _export_student(run, out, fmt):
  """The run's student exported as ``fmt`` on images and on clips into ``out``
  (which then holds those two models and their .json, nothing else); their
  metadata."""
  meta = export_model.export(run, 'student', str(out), 'latest', fmt=fmt)
  clips_meta = export_model.export(run, 'student', str(out), 'latest', fmt=fmt, inputs='clips')
  assert sorted(os.listdir(out)) == ['student.json', f'student.{fmt}',
                                     'student_clips.json', f'student_clips.{fmt}']
  return meta, clips_meta


def test_exported_student_runs_without_i2v_jax_and_reproduces_the_run(
    tmp_path, run, cli_data_dir, jax_only_python):
  out = tmp_path / 'exported'
  meta, clips_meta = _export_student(run, out, 'stablehlo')
  assert meta['distance'] == 'cosine' and meta['output']['l2_normalised']
  assert meta['checkpoint_step'] == 2 and len(meta['checkpoint_sha256_record']) == 64
  assert json.load(open(out / 'student.json'))['input']['shape'] == ['N', 64, 32, 3]
  _real_inputs(tmp_path, cli_data_dir, clips_meta['input']['shape'][1])
  _check_against_the_run(_run_outside(jax_only_python, RUN_EXPORTED, tmp_path), run)


def test_savedmodel_runs_with_tensorflow_alone_and_reproduces_the_run(
    tmp_path, run, cli_data_dir, tf_only_python):
  out = tmp_path / 'saved'
  meta, clips_meta = _export_student(run, out, 'savedmodel')
  assert meta['format'].startswith('savedmodel') and meta['checkpoint_step'] == 2
  assert meta['file_sha256'] == export_model.folder_sha256(str(out / 'student.savedmodel'))
  assert os.path.isfile(out / 'student.savedmodel' / 'saved_model.pb')
  _real_inputs(tmp_path, cli_data_dir, clips_meta['input']['shape'][1])
  _check_against_the_run(_run_outside(tf_only_python, RUN_SAVEDMODEL, tmp_path), run)


def test_onnx_runs_with_onnxruntime_alone_and_with_openvino_alone_and_reproduces_the_run(
    tmp_path, run, cli_data_dir, onnx_only_python, openvino_only_python):
  out = tmp_path / 'onnx'
  meta, clips_meta = _export_student(run, out, 'onnx')
  assert meta['format'].startswith('onnx') and meta['checkpoint_step'] == 2
  assert meta['file_sha256'] == hashlib.sha256((out / 'student.onnx').read_bytes()).hexdigest()
  _real_inputs(tmp_path, cli_data_dir, clips_meta['input']['shape'][1])
  _check_against_the_run(_run_outside(onnx_only_python, RUN_ONNX, tmp_path), run)
  _check_against_the_run(_run_outside(openvino_only_python, RUN_OPENVINO, tmp_path), run)


def test_the_onnx_max_pool_is_the_windows_maximum():
  """The stem's max pool as ONNX receives it (strided slices of the -inf-bordered
  input) against the definition: each output the maximum of its 3x3 window,
  stride 2, one row and column of padding, written as loops."""
  import jax
  x = np.random.default_rng(0).standard_normal((2, 7, 6, 3)).astype(np.float32)
  got = np.asarray(export_model._max_pool_by_slices(
      jax.numpy.asarray(x), (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0)),
      (1, 1, 1, 1), (1, 1, 1, 1)))
  want = np.full((2, 4, 3, 3), -np.inf, np.float32)
  for n in range(2):
    for i in range(4):
      for j in range(3):
        for di in range(3):
          for dj in range(3):
            r, c = 2 * i + di - 1, 2 * j + dj - 1
            if 0 <= r < 7 and 0 <= c < 6:
              want[n, i, j] = np.maximum(want[n, i, j], x[n, r, c])
  np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize('fmt', export_model.FORMATS)
def test_any_crop_size_is_resized_inside(tmp_path, run, fmt):
  """--input_size=any: height and width symbolic. Crops at the run's size give
  the fixed-size file's embeddings; crops of another size give what a file
  exported for that size gives (the resize inside, by definition of
  `serving_fn`), each format through its own runtime, in process."""
  import jax
  missing = [m for m in export_model.CONVERTERS.get(fmt, ((), ''))[0]
             if importlib.util.find_spec(m) is None]
  if missing:
    pytest.skip(f'{fmt} converter not installed ({", ".join(missing)})')
  meta = export_model.export(run, 'student', str(tmp_path), 'latest', fmt=fmt, input_size='any')
  assert meta['input']['shape'] == ['N', 'H', 'W', 3]
  assert meta['input']['resized_inside_to'] == [64, 32]
  call = _runner(fmt, meta['path'])
  rng = np.random.default_rng(0)
  native = rng.integers(0, 256, (3, 64, 32, 3), dtype=np.uint8)
  other = rng.integers(0, 256, (2, 80, 44, 3), dtype=np.uint8)
  from i2v_jax import checkpoint, config_lib
  config = config_lib.load_saved(run)
  variables = checkpoint.load_network(run, 'student', 'latest')
  classes = int(variables['params']['head']['classifier']['kernel'].shape[-1])
  for crops in (native, other):
    want = jax.jit(export_model.serving_fn(config, classes, 'student', variables,
                                           crops.shape[1:3], clips=False))(crops)
    np.testing.assert_allclose(call(crops), np.asarray(want), atol=1e-5)


def _runner(fmt, path):
  """images -> embeddings through ``fmt``'s own runtime."""
  if fmt == 'stablehlo':
    import jax
    with open(path, 'rb') as f:
      model = jax.export.deserialize(f.read())
    return lambda x: np.asarray(model.call(x))
  if fmt == 'savedmodel':
    import tensorflow as tf
    serve = tf.saved_model.load(path).signatures['serving_default']
    return lambda x: serve(images=tf.constant(x))['embeddings'].numpy()
  import onnxruntime as ort
  session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
  return lambda x: session.run(['embeddings'], {'images': x})[0]


def test_the_teacher_exports_on_clips(tmp_path, run):
  meta = export_model.export(run, 'teacher', str(tmp_path), 'latest')
  assert meta['input']['shape'][0] == 'N' and len(meta['input']['shape']) == 5
  assert meta['input']['valid'] == ['N', meta['input']['shape'][1]]


@pytest.mark.parametrize('args, expected', [
    (['--workdir={tmp}/none', '--out={tmp}/o'], 'no trained run there'),
    (['--workdir={run}', '--out={tmp}/o', '--format=tflite'], '--format=tflite: choose one of'),
    (['--workdir={run}', '--out={tmp}/o', '--network=tacher'], '--network=tacher: choose'),
    (['--workdir={run}', '--out={tmp}/o', '--checkpoint=bets'], "checkpoint 'bets'"),
    (['--workdir={run}', '--out={tmp}/o', '--input_size=256'], '--input_size=256: give'),
    (['--workdir={run}'], '--out is required'),
])
def test_bad_input_to_the_exporter_is_one_line(tmp_path, run, args, expected, capsys):
  args = [a.format(tmp=tmp_path, run=run) for a in args]
  with pytest.raises(SystemExit) if expected.endswith('required') else _no_exit():
    assert export_model.main(['export_model', *args]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('error: ') and expected in err[0], err
  assert not os.path.exists(tmp_path / 'o')


def test_a_missing_converter_is_one_line(tmp_path, run, capsys, monkeypatch):
  monkeypatch.setitem(export_model.CONVERTERS, 'onnx', (('jax2onnx_absent',), 'pip install it'))
  assert export_model.main(['export_model', f'--workdir={run}', '--format=onnx',
                            f'--out={tmp_path / "o"}']) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == ['error: --format=onnx needs jax2onnx_absent, not installed: pip install it']
  assert not os.path.exists(tmp_path / 'o')


def test_a_damaged_checkpoint_is_refused(tmp_path, run, capsys):
  import shutil
  copy = str(tmp_path / 'run')
  shutil.copytree(run, copy)
  step = os.path.join(copy, 'checkpoints', '2')
  victim = next(os.path.join(r, f) for r, _, fs in os.walk(step) for f in fs
                if os.path.getsize(os.path.join(r, f)) > 100)
  with open(victim, 'r+b') as f:
    f.write(b'\0' * 64)
  assert export_model.main(['export_model', f'--workdir={copy}', '--checkpoint=latest',
                            f'--out={tmp_path / "o"}']) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'error: ' in err[0], err
  assert not os.path.exists(tmp_path / 'o')


class _no_exit:
  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False
