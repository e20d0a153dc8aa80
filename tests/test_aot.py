"""The TPU compile check (i2v_jax.aot): slice names, the report of a tiny step
compiled for 4 CPU devices, the one-line answer without libtpu, and, where
libtpu is installed (pip install -e '.[tpu]', as CI does), the same step
compiled for a 4-chip v5e."""

import importlib.util
import sys

import jax
import pytest

from configs import base
from i2v_jax import aot, train_step

HAS_LIBTPU = importlib.util.find_spec('libtpu') is not None


@pytest.mark.parametrize('name, chips, topology, hosts', [
    ('v5e-4', 4, 'v5e:2x2', 1), ('v5e-8', 8, 'v5e:2x4', 1), ('v5e-16', 16, 'v5e:4x4', 4),
    ('v6e-8', 8, 'v6e:2x4', 1), ('v4-8', 4, 'v4:2x2x1', 1), ('v4-16', 8, 'v4:2x2x2', 2),
    ('v5p-8', 4, 'v5p:2x2x1', 1), ('v5p-32', 16, 'v5p:2x2x4', 4)])
def test_slice_names_map_to_topologies(name, chips, topology, hosts):
  s = aot.parse_slice(name)
  assert (s.chips, s.topology, s.hosts) == (chips, topology, hosts)


@pytest.mark.parametrize('name, named', [('v5e-7', 'no TPU v5e slice of that size'),
                                         ('v4-3', 'no TPU v4 slice'), ('tpu-8', 'like v4-8')])
def test_unknown_slices_are_one_line(name, named):
  with pytest.raises(aot.AotError, match=named):
    aot.parse_slice(name)


def test_without_libtpu_the_command_names_the_install(monkeypatch, capsys):
  monkeypatch.setitem(sys.modules, 'libtpu', None)  # import libtpu raises ImportError
  code = aot.main(['aot', '--config=configs/base.py:preset=mdkt,runlocal', '--topology=v5e-4'])
  err = capsys.readouterr().err.strip()
  assert code == 2 and len(err.splitlines()) == 1
  assert err.startswith('error: libtpu is not installed') and "pip install -e '.[tpu]'" in err


def tiny():
  c = base.get_config('preset=mdkt,runlocal')
  c.model.width = 4
  c.input.height, c.input.width = 32, 16
  c.input.num_ids, c.input.tracklets_per_id = 4, 2
  return c


def test_collectives_are_read_from_the_program_text():
  text = """
  %all-reduce.1 = f32[1024,16]{1,0} all-reduce(f32[1024,16]{1,0} %x), replica_groups={}
  %ag = (bf16[8,4]{1,0}, f32[2]{0}) all-gather-start(bf16[2,4]{1,0} %y), dimensions={0}
  %agd = bf16[8,4]{1,0} all-gather-done((bf16[8,4]{1,0}, f32[2]{0}) %ag)
  %add = f32[4]{0} add(f32[4]{0} %a, f32[4]{0} %b)"""
  found = aot.collectives(text)
  assert [c['op'] for c in found] == ['all-reduce', 'all-gather']
  assert found[0]['bytes'] == 1024 * 16 * 4 and found[1]['bytes'] == 8 * 4 * 2 + 2 * 4


def test_the_report_of_a_step_compiled_for_cpu_devices():
  """The analysis and report a TPU compile gives, from the same step compiled for
  4 CPU devices: memory and FLOPs are counted, the gradient all-reduce is found,
  the roofline and verdict follow from the published v5e figures."""
  c = tiny()
  step = aot.compile_step(c, 12, jax.devices('cpu')[:4])
  parts = ('argument_bytes', 'output_bytes', 'temp_bytes', 'generated_code_bytes')
  assert step['total_bytes'] > 0 and step['flops'] > 0 and step['bytes_accessed'] > 0
  assert step['total_bytes'] <= sum(step[k] for k in parts)  # donated aliases counted once
  assert 'all-reduce' in {x['op'] for x in step['collectives']}
  s = aot.parse_slice('v5e-4')
  lines = aot.describe(s, c, step, 1)
  bound = max(step['flops'] / 197e12, step['bytes_accessed'] / 819e9)
  assert f'roofline lower bound: {1e3 * bound:.1f} ms/step' in '\n'.join(lines)
  ok, margin = aot.fits(step, s, 1)
  assert ok and margin == 16 * 2 ** 30 - step['total_bytes']
  assert aot.fits(dict(step, total_bytes=17 * 2 ** 30), s, 1) == (False, -2 ** 30)
  assert aot.fits(dict(step, total_bytes=17 * 2 ** 30), aot.parse_slice('v4-8'), 2) == (
      False, -2 ** 30)  # v4: 32 GiB a chip shared by its 2 TensorCores (devices)


@pytest.mark.skipif(not HAS_LIBTPU, reason="libtpu not installed (pip install -e '.[tpu]')")
@pytest.mark.parametrize('name, devices, hosts', [
    ('v4-8', 4, 1), ('v5p-8', 4, 1), ('v5e-16', 16, 4), ('v6e-8', 8, 1)])
def test_slices_give_one_device_a_chip_over_their_hosts(name, devices, hosts):
  """v4 and v5p chips (two TensorCores) are one device each, as the trainer's
  mesh requires; multi-host slices spread their chips over their hosts."""
  got = aot.tpu_devices(aot.parse_slice(name))
  assert len(got) == devices and len({d.process_index for d in got}) == hosts
  assert train_step.make_mesh(got).devices.size == devices  # the trainer's mesh accepts them


@pytest.mark.slow
@pytest.mark.skipif(not HAS_LIBTPU, reason="libtpu not installed (pip install -e '.[tpu]')")
def test_a_tiny_step_compiles_for_a_4_chip_v5e_and_matches_the_cpu_flops():
  s = aot.parse_slice('v5e-4')
  devices = aot.tpu_devices(s)
  assert len(devices) == 4 and devices[0].platform == 'tpu'
  c = tiny()
  tpu = aot.compile_step(c, 12, devices)
  assert aot.fits(tpu, s, 1)[0] and 0 < tpu['total_bytes'] < 2 ** 30
  assert {x['op'] for x in tpu['collectives']} & {'all-reduce', 'reduce-scatter'}
  cpu = aot.compile_step(c, 12, jax.devices('cpu')[:4])
  # One program per device, the same work: FLOPs over all chips agree within 10%.
  assert tpu['flops'] > 0 and abs(4 * tpu['flops'] - 4 * cpu['flops']) <= 0.1 * 4 * cpu['flops'], (
      tpu['flops'], cpu['flops'])
