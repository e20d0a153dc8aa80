r"""The defaults, as an experiment file: every preset on every dataset.

    python -m i2v_jax.main --config=configs/base.py:preset=mdkt --workdir=/tmp/run
    python -m i2v_jax.main --config=configs/base.py:preset=tkp,dataset=mars \
        --config.data.dir=/data/mars_tfrecords --workdir=/tmp/tkp_mars

Arguments after the colon (comma-separated):
  preset    mdkt (default) | tkp | vkd | vkd_teacher | teacher_only | student_only,
            or an ablation of one (i2v_jax.defaults.ABLATIONS: mdkt_no_tcl, mdkt_one_way, ...)
  dataset   synthetic (default) | objects | mars | duke | veri: input size and schedule
  runlocal  shrink everything (tiny ResNet, 64x32 input, 20 steps) for a smoke run

Every key, its default and the presets live in the library (`i2v_jax.defaults`);
this file only turns the arguments into them. Any field can then be overridden
with ``--config.<path>=<value>``; the dict is locked, so a misspelt key is an
error that names it.
"""

from i2v_jax import defaults
from i2v_jax.config_lib import parse_arg

PRESETS = defaults.PRESETS
DATASETS = tuple(defaults.DATASETS)


def get_config(arg=None):
  """Returns the locked ConfigDict for ``arg`` (see module docstring)."""
  arg = parse_arg(arg, preset='mdkt', dataset='synthetic', runlocal=False)
  return defaults.get_config(arg.preset, arg.dataset, arg.runlocal)
