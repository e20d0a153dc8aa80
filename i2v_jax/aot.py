r"""Compile the train step for a TPU slice on any machine, and size it.

    pip install -e '.[tpu]'     # libtpu (jax's pinned version), here only to compile
    python -m i2v_jax.aot --config=configs/base.py:preset=mdkt,dataset=mars --topology=v5e-8
        [--config.model.dtype=bfloat16] [--num_ids=16] [--search_p] [--no_eval]

Compiles exactly what the trainer runs (the same config, `train_step.make_mesh` over
the slice's chips, the global batch P x K split over every chip, the state
replicated, the step's buffers donated) and the evaluation encoders, for a TPU
slice that need not exist: libtpu describes its chips (`jax.experimental.
topologies`) and XLA compiles for them here. No TPU and no data are needed: the
state and batch are shapes only, and the number of classes is the dataset's
(`dataset=` in the config: MARS 625, Duke 702, VeRi 576, synthetic 64).

Prints, per chip and labelled as the compiler's analysis (not a measurement):
argument, output, temporary and total bytes against the chip's HBM; FLOPs and
bytes accessed per step; the collectives in the compiled program with their
sizes; a roofline lower bound on the step time (the larger of FLOPs / peak and
bytes / HBM bandwidth, from the chips' published figures, printed) and the
frames/s it implies; and a verdict: fits or not, by how much. ``--search_p``
compiles at 2P as well and, memory being linear in the batch, gives the largest
P (a multiple of the chip count) that fits; it is then compiled to confirm.

Slice names: ``v4-8`` ... (v4 and v5p count TensorCores, 2 a chip), ``v5e-16``,
``v6e-8`` ... (chips). Slices of more chips than one host holds are multi-host
(4 chips a host; v5e-8 and v6e-8 are one host of 8 chips), compiled the same way.
Exit status 2 with one line when libtpu is missing or a name is unknown.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from i2v_jax import command_line
from i2v_jax.datasets import DATASETS
from i2v_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Chip:
  """A TPU generation's published per-chip figures."""
  name: str
  hbm_gib: float
  bf16_tflops: float
  hbm_gbps: float
  cores_in_name: int   # the slice name counts TensorCores (2 a chip) or chips (1)
  source: str


CHIPS = {
    'v4': Chip('TPU v4', 32, 275, 1228, 2, 'cloud.google.com/tpu/docs/v4'),
    'v5e': Chip('TPU v5e', 16, 197, 819, 1, 'cloud.google.com/tpu/docs/v5e'),
    'v5p': Chip('TPU v5p', 95, 459, 2765, 2, 'cloud.google.com/tpu/docs/v5p'),
    'v6e': Chip('TPU v6e', 32, 918, 1640, 1, 'cloud.google.com/tpu/docs/v6e'),
}
LIBTPU = "pip install -e '.[tpu]' (libtpu==0.0.42.1, jax's pin)"
_SHAPES_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8),
              128: (8, 16), 256: (16, 16)}
_SHAPES_3D = {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4), 64: (4, 4, 4),
              128: (4, 4, 8), 256: (4, 8, 8), 512: (8, 8, 8)}


class AotError(UserError):
  """A slice name, a missing libtpu or a config the compile check cannot use."""


@dataclasses.dataclass(frozen=True)
class Slice:
  name: str
  chip: Chip
  chips: int
  topology: str                         # libtpu's name, e.g. 'v5e:2x4'
  chips_per_host_bounds: Tuple[int, int, int]

  @property
  def hosts(self) -> int:
    return self.chips // math.prod(self.chips_per_host_bounds)


def parse_slice(name: str) -> Slice:
  """'v5e-16' -> a 4x4 v5e slice of 4 hosts; 'v4-8' -> 4 v4 chips (2x2x1) on one host."""
  match = re.fullmatch(r'(v4|v5e|v5p|v6e)-(\d+)', name.strip().lower())
  if not match:
    raise AotError(f'--topology={name!r}: use a slice name like v4-8, v5e-16, v5p-32 or '
                   f'v6e-8 (generations: {", ".join(CHIPS)})')
  chip = CHIPS[match.group(1)]
  count = int(match.group(2))
  chips = count // chip.cores_in_name
  shapes = _SHAPES_3D if chip.cores_in_name == 2 else _SHAPES_2D
  if count % chip.cores_in_name or chips not in shapes:
    sizes = sorted(n * chip.cores_in_name for n in shapes)
    raise AotError(f'--topology={name!r}: no {chip.name} slice of that size; choose '
                   f'{match.group(1)}-N with N in {sizes}')
  shape = shapes[chips]
  if len(shape) == 2:  # v5e / v6e: one host of up to 8 chips, else hosts of 2x2
    bounds = (shape[0], shape[1], 1) if chips <= 8 else (2, 2, 1)
  else:  # v4 / v5p: hosts of 2x2x1 chips
    bounds = (min(shape[0], 2), min(shape[1], 2), 1)
  topology = f'{match.group(1)}:' + 'x'.join(map(str, shape))
  return Slice(name, chip, chips, topology, bounds)


def tpu_devices(s: Slice) -> list:
  """Compile-only devices of slice ``s`` (libtpu describes them; none need exist)."""
  try:
    import libtpu  # noqa: F401  (installed or not: the import is the check)
  except ImportError:
    raise AotError(f'libtpu is not installed; {LIBTPU}') from None
  # Compile-only: other processes (another check, a test) may use libtpu at once.
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
  from jax.experimental import topologies
  # v4 and v5p chips have two TensorCores; JAX runs them as one device a chip
  # ("megacore", v5p's default, v4's to ask for), as the trainer's mesh needs.
  extra = {'chip_config_name': 'megacore'} if s.chip.cores_in_name == 2 else {}
  topo = topologies.get_topology_desc(platform='tpu', topology_name=s.topology,
                                      chips_per_host_bounds=s.chips_per_host_bounds, **extra)
  return list(topo.devices)


# ------------------------------------------------------------------ compiling


def abstract_state(config, num_classes: int):
  """The train state's shapes, as `train_step.initial_state` builds it (a frozen or
  starting teacher: shapes of the teacher's own variables), without any data."""
  import jax
  from i2v_jax import train_step
  key = jax.random.key(config.seed)
  teacher = None
  if config.teacher.checkpoint and 'teacher' in config.networks:
    teacher = jax.eval_shape(lambda k: train_step.init_variables(config, num_classes, k),
                             key)['teacher']
    return jax.eval_shape(lambda k, t: train_step.create_train_state(config, num_classes, k, t),
                          key, teacher)
  return jax.eval_shape(lambda k: train_step.create_train_state(config, num_classes, k), key)


def _placed(tree, sharding):
  import jax
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                      tree)


def _analysis(compiled, seconds: float) -> Dict[str, Any]:
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else (cost or {})
  text = compiled.as_text()
  out = {'compile_s': seconds, 'flops': float(cost.get('flops', 0.0)),
         'bytes_accessed': float(cost.get('bytes accessed', 0.0)),
         'collectives': collectives(text), 'hlo': text}
  for field in ('argument', 'output', 'temp', 'alias', 'generated_code'):
    out[f'{field}_bytes'] = int(getattr(mem, f'{field}_size_in_bytes', 0) or 0)
  # Donated state buffers are aliased to the outputs: count them once.
  out['total_bytes'] = (out['argument_bytes'] + out['output_bytes'] - out['alias_bytes']
                        + out['temp_bytes'] + out['generated_code_bytes'])
  return out


def compile_step(config, num_classes: int, devices) -> Dict[str, Any]:
  """Compiles the trainer's step for ``devices``; the compiler's per-device analysis."""
  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding, PartitionSpec as P
  from i2v_jax import train_step
  mesh = train_step.make_mesh(devices)
  inp = config.input
  b = inp.num_ids * inp.tracklets_per_id
  state = _placed(abstract_state(config, num_classes), NamedSharding(mesh, P()))
  sharded = NamedSharding(mesh, P(train_step.AXIS))
  batch = {'clips': jax.ShapeDtypeStruct((b, inp.clip_len, inp.height, inp.width, 3),
                                         jnp.float32, sharding=sharded),
           'labels': jax.ShapeDtypeStruct((b,), jnp.int32, sharding=sharded),
           # The input pipeline's augmentation draws: the step applies them on the chip.
           'flip': jax.ShapeDtypeStruct((b, inp.clip_len), jnp.bool_, sharding=sharded),
           'crop': jax.ShapeDtypeStruct((b, inp.clip_len, 2), jnp.int32, sharding=sharded),
           'erase': jax.ShapeDtypeStruct((b, inp.clip_len, 4), jnp.int32, sharding=sharded)}
  t = time.perf_counter()
  compiled = train_step.make_train_step(config, mesh).lower(state, batch).compile()
  out = _analysis(compiled, time.perf_counter() - t)
  out['frames'] = b * inp.clip_len
  return out


def compile_encoders(config, num_classes: int, devices) -> Dict[str, Dict[str, Any]]:
  """Compiles the evaluation encoders (images, and video chunks) for ``devices``."""
  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding, PartitionSpec as P
  from i2v_jax import train_step
  from i2v_jax.evaluation import features
  mesh = train_step.make_mesh(devices)
  state = abstract_state(config, num_classes)
  variables = {name: {'params': state.params[name], 'batch_stats': state.batch_stats[name]}
               for name in state.params}
  variables.update(state.frozen)
  ev, inp = config.eval, config.input
  n = ev.batch_size * len(devices)
  sharded = NamedSharding(mesh, P(train_step.AXIS))
  out = {}
  for kind, network in features.encoders(config).items():
    c = 1 if kind == 'image' else ev.clip_len
    frames = jax.ShapeDtypeStruct((n, c, inp.height, inp.width, 3), jnp.float32,
                                  sharding=sharded)
    mask = jax.ShapeDtypeStruct((n, c), jnp.bool_, sharding=sharded)
    fn = features.make_encode_fn(config, num_classes, network)
    t = time.perf_counter()
    compiled = fn.lower(_placed(variables[network], NamedSharding(mesh, P())),
                        frames, mask).compile()
    out[f'{kind} ({network}, {n} x {c} frames)'] = _analysis(compiled, time.perf_counter() - t)
  return out


_DTYPE_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 'bf16': 2, 'f16': 2, 's16': 2, 'u16': 2,
                'f32': 4, 's32': 4, 'u32': 4, 'f64': 8, 's64': 8, 'u64': 8}
_COLLECTIVE = re.compile(r'^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.*?)\s(all-reduce|all-gather|'
                         r'reduce-scatter|all-to-all|collective-permute)(?:-start)?\(')
_ARRAY = re.compile(r'\b(pred|[suf]\d+|bf16)\[([\d,]*)\]')


def array_bytes(text: str) -> int:
  """Logical bytes (elements x element size) of every array shape in ``text``,
  e.g. ``bf16[8,4]{1,0}`` or a tuple of them."""
  return sum(_DTYPE_BYTES.get(d, 4) * math.prod(int(x) for x in dims.split(',') if x)
             for d, dims in _ARRAY.findall(text))


def collectives(hlo_text: str) -> List[Dict[str, Any]]:
  """Every collective of a compiled program: {'op', 'bytes', 'shapes'}; an async
  pair (``-start``/``-done``) counts once."""
  found = []
  for line in hlo_text.splitlines():
    match = _COLLECTIVE.search(line)
    if not match:
      continue
    shapes = _ARRAY.findall(match.group(1))
    size = array_bytes(match.group(1))
    found.append({'op': match.group(2), 'bytes': size,
                  'shapes': [f'{d}[{dims}]' for d, dims in shapes]})
  return found


# ------------------------------------------------------------------ report


def _gib(n: float) -> str:
  return f'{n / 2 ** 30:.2f} GiB'


def roofline(analysis: Dict[str, Any], chip: Chip) -> Dict[str, float]:
  """Lower bound on one step's time on one chip: max(FLOPs / peak, bytes / HBM bw)."""
  compute = analysis['flops'] / (chip.bf16_tflops * 1e12)
  memory = analysis['bytes_accessed'] / (chip.hbm_gbps * 1e9)
  return {'compute_s': compute, 'memory_s': memory, 'step_s': max(compute, memory)}


def describe(s: Slice, config, step: Dict[str, Any], devices_per_chip: int) -> List[str]:
  """The report's lines for one compiled step."""
  hbm = s.chip.hbm_gib * 2 ** 30 / devices_per_chip
  unit = 'chip' if devices_per_chip == 1 else f'device ({devices_per_chip} a chip)'
  r = roofline(step, s.chip)
  frames_per_device = step['frames'] / (s.chips * devices_per_chip)
  ops: Dict[str, List[int]] = {}
  for c in step['collectives']:
    ops.setdefault(c['op'], []).append(c['bytes'])
  lines = [
      f'  memory per {unit}: arguments {_gib(step["argument_bytes"])}, outputs '
      f'{_gib(step["output_bytes"])} ({_gib(step["alias_bytes"])} of them donated '
      f'arguments), temporaries {_gib(step["temp_bytes"])}, code '
      f'{_gib(step["generated_code_bytes"])}: total {_gib(step["total_bytes"])} of '
      f'{_gib(hbm)} HBM',
      f'  per step per {unit}: {step["flops"] / 1e12:.3f} TFLOP, '
      f'{step["bytes_accessed"] / 2 ** 30:.2f} GiB accessed',
      '  collectives: ' + ('; '.join(
          f'{len(v)} {op} ({_gib(sum(v))} in all, largest {max(v) / 2 ** 20:.1f} MiB)'
          for op, v in sorted(ops.items())) or 'none'),
      f'  roofline lower bound: {1e3 * r["step_s"]:.1f} ms/step (compute '
      f'{1e3 * r["compute_s"]:.1f} ms at {s.chip.bf16_tflops:g} TFLOP/s bf16, memory '
      f'{1e3 * r["memory_s"]:.1f} ms at {s.chip.hbm_gbps:g} GB/s; {s.chip.name}, '
      f'{s.chip.source}) -> at most {frames_per_device / r["step_s"]:,.0f} teacher '
      f'frames/s per {unit}' if r['step_s'] > 0 else '  roofline: no cost analysis',
      f'  compiled in {step["compile_s"]:.0f} s on this machine']
  return lines


def fits(step: Dict[str, Any], s: Slice, devices_per_chip: int) -> Tuple[bool, float]:
  hbm = s.chip.hbm_gib * 2 ** 30 / devices_per_chip
  return step['total_bytes'] <= hbm, hbm - step['total_bytes']


def largest_p(config, num_classes, devices, first: Dict[str, Any], s: Slice,
              devices_per_chip: int, log) -> Tuple[Optional[int], Dict[str, Any]]:
  """Memory is linear in P: from the compile at P and one at 2P, the largest P
  (a multiple of the device count) whose total fits; then compiled to confirm
  (stepping down if the estimate was too high)."""
  n = len(devices)
  p0 = config.input.num_ids
  c2 = config.copy_and_resolve_references()
  c2.input.num_ids = 2 * p0
  log(f'compiling at P={2 * p0} for the memory slope...')
  second = compile_step(c2, num_classes, devices)
  slope = (second['total_bytes'] - first['total_bytes']) / p0
  hbm = s.chip.hbm_gib * 2 ** 30 / devices_per_chip
  fixed = first['total_bytes'] - slope * p0
  if slope <= 0:
    return None, {'slope': slope}
  estimate = int((hbm - fixed) / slope) // n * n
  checked = None
  while estimate >= n:
    c3 = config.copy_and_resolve_references()
    c3.input.num_ids = estimate
    log(f'compiling at P={estimate} (estimated largest) to confirm...')
    checked = compile_step(c3, num_classes, devices)
    if fits(checked, s, devices_per_chip)[0]:
      break
    estimate -= n
  return (estimate if estimate >= n else None), {
      'slope_bytes_per_id': slope, 'fixed_bytes': fixed,
      'confirmed_total_bytes': checked['total_bytes'] if checked else None}


def main(argv: Optional[List[str]] = None) -> int:
  from absl import flags
  from ml_collections import config_flags
  fl = flags.FlagValues()
  config_flag = config_flags.DEFINE_config_file('config', None, 'experiment config file',
                                                flag_values=fl)
  topology = flags.DEFINE_string('topology', None, 'slice: v4-8, v5e-16, v5p-32, v6e-8, ...',
                                 flag_values=fl)
  num_ids = flags.DEFINE_integer('num_ids', None, 'P (default: the config\'s)', flag_values=fl)
  search_p = flags.DEFINE_bool('search_p', False, 'find the largest P that fits',
                               flag_values=fl)
  no_eval = flags.DEFINE_bool('no_eval', False, 'skip the evaluation encoders',
                              flag_values=fl)
  dump = flags.DEFINE_string('dump_hlo', '', 'write the compiled step program here',
                             flag_values=fl)
  command_line.parse(fl, argv, __doc__)
  try:
    if not config_flag.value or not topology.value:
      raise AotError('--config and --topology are required (python -m i2v_jax.aot '
                     '--config=configs/base.py:preset=mdkt,dataset=mars --topology=v5e-8)')
    config = config_flag.value
    from i2v_jax import config_lib
    s = parse_slice(topology.value)
    if num_ids.value:
      config.input.num_ids = num_ids.value
    if config.teacher.checkpoint == '' and config.teacher.mode == 'frozen':
      config.teacher.checkpoint = '<shapes only>'  # a frozen teacher's shapes are its own
    config_lib.validate(config)
    devices = tpu_devices(s)
    config_lib.check_devices(config, len(devices))
  except (flags.Error, UserError) as e:
    print(f'error: {str(e).splitlines()[0]}', file=sys.stderr)
    return 2
  num_classes = DATASETS[config.data.name].num_train_ids
  per_chip = len(devices) // s.chips
  inp = config.input
  log = lambda text: print(text, flush=True)
  log(f'{s.name}: {s.chips} {s.chip.name} chips ({s.topology}, {s.hosts} host(s), '
      f'{len(devices)} devices); {config.preset} on {config.data.name} '
      f'({num_classes} classes), P x K = {inp.num_ids} x {inp.tracklets_per_id} clips of '
      f'{inp.clip_len} frames at {inp.height}x{inp.width}, {config.model.dtype}')
  log('compiling the train step (this machine does the TPU compiler\'s work)...')
  step = compile_step(config, num_classes, devices)
  if dump.value:
    with open(dump.value, 'w') as f:
      f.write(step['hlo'])
  log('THE COMPILER\'S ANALYSIS (not a measurement):')
  log('train step:')
  for line in describe(s, config, step, per_chip):
    log(line)
  ok, margin = fits(step, s, per_chip)
  log(f'verdict: {"FITS" if ok else "DOES NOT FIT"} at P={inp.num_ids} '
      f'({_gib(abs(margin))} {"to spare" if ok else "over"} per '
      f'{"chip" if per_chip == 1 else "device"})')
  if search_p.value:
    best, fit = largest_p(config, num_classes, devices, step, s, per_chip, log)
    log(f'largest P that fits: {best} (memory {_gib(fit.get("slope_bytes_per_id", 0))} per '
        f'identity of {inp.tracklets_per_id} clips, {_gib(fit.get("fixed_bytes", 0))} fixed)'
        if best else 'largest P that fits: none (even P = the device count does not)')
  if not no_eval.value:
    for name, enc in compile_encoders(config, num_classes, devices).items():
      log(f'evaluation encoder, {name}: total {_gib(enc["total_bytes"])} per device, '
          f'{enc["flops"] / 1e12:.3f} TFLOP per batch, compiled in {enc["compile_s"]:.0f} s')
  return 0


if __name__ == '__main__':
  sys.exit(main())
