"""The layers of docs/layout.md are checked, not hoped for: the library never
imports the tools that build datasets (data_prep, TFDS) or the experiment
configs, only `i2v_jax.experiments` (the sweep) imports itself, and the tables
and the config check import no JAX."""

import ast
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORBIDDEN = ('data_prep', 'tensorflow_datasets', 'configs')


def imports(path):
  """Every module a file imports, at top level or inside functions
  (``from a import b`` gives ``a.b``)."""
  tree = ast.parse(open(path, encoding='utf-8').read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      yield from (f'{node.module}.{a.name}' for a in node.names)


def test_the_library_imports_no_tool_and_no_config():
  bad = []
  for root, _, files in os.walk(os.path.join(REPO, 'i2v_jax')):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(root, name)
        bad += [f'{os.path.relpath(path, REPO)} imports {m}' for m in imports(path)
                if m.split('.')[0] in FORBIDDEN]
  assert not bad, bad


def test_nothing_in_the_library_imports_its_experiments():
  bad = []
  for root, _, files in os.walk(os.path.join(REPO, 'i2v_jax')):
    if os.path.basename(root) == 'experiments':
      continue
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(root, name)
        bad += [f'{os.path.relpath(path, REPO)} imports {m}' for m in imports(path)
                if m.startswith('i2v_jax.experiments')]
  assert not bad, bad


def test_configs_import_only_the_config_and_dataset_tables_and_each_other():
  allowed = ('ml_collections', 'i2v_jax.config_lib', 'i2v_jax.datasets', 'i2v_jax.atomic',
             'i2v_jax.defaults', 'configs')
  stdlib = ('os', 'sys', 're', 'math', 'dataclasses', 'typing', 'json', 'inspect', '__future__')
  bad = []
  for name in os.listdir(os.path.join(REPO, 'configs')):
    if name.endswith('.py'):
      path = os.path.join(REPO, 'configs', name)
      bad += [f'configs/{name} imports {m}' for m in imports(path)
              if m.split('.')[0] not in stdlib
              and not any(m == a or m.startswith(a + '.') for a in allowed)]
  assert not bad, bad


def test_the_checker_sees_imports_inside_functions(tmp_path):
  path = tmp_path / 'x.py'
  path.write_text('def f():\n  from data_prep import build\n  import tensorflow_datasets\n')
  assert list(imports(str(path))) == ['data_prep.build', 'tensorflow_datasets']


def test_the_tables_import_no_jax():
  """The tables (datasets, eval_tables, defaults, run_folder, errors) import the
  standard library and ml_collections only, so configs and tools read them without
  JAX or TensorFlow. (`config_lib.validate` reads each switch's choices from the
  module that owns it, which may import JAX: that starts no backend, and
  tests/test_cli_errors.py runs every refusal under JAX_PLATFORMS=nosuch.)"""
  stdlib = sys.stdlib_module_names | {'__future__'}
  allowed = ('ml_collections', 'i2v_jax.datasets', 'i2v_jax.defaults', 'i2v_jax.eval_tables',
             'i2v_jax.errors', 'i2v_jax.run_folder')
  bad = []
  for name in ('datasets.py', 'defaults.py', 'eval_tables.py', 'errors.py', 'run_folder.py'):
    bad += [f'i2v_jax/{name} imports {m}' for m in imports(os.path.join(REPO, 'i2v_jax', name))
            if m.split('.')[0] not in stdlib
            and not any(m == a or m.startswith(a + '.') for a in allowed)]
  assert not bad, bad


def test_no_enumeration_is_restated_in_the_config_layer():
  """Every switch's choices come from its owner's CONFIG_CHOICES: config_lib (the
  validation) spells no owner's tuple of choices again."""
  from i2v_jax import config_lib
  owned = {tuple(v) for k, v in config_lib.choices().items() if k != 'mode'}
  assert len(config_lib.choices()) >= 20  # every owner was read
  bad = []
  for name in ('config_lib.py',):
    tree = ast.parse(open(os.path.join(REPO, 'i2v_jax', name), encoding='utf-8').read())
    for node in ast.walk(tree):
      if isinstance(node, ast.Tuple) and len(node.elts) > 1 and all(
          isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
        values = tuple(e.value for e in node.elts)
        if values in owned or tuple(reversed(values)) in owned:
          bad.append(f'i2v_jax/{name}:{node.lineno} restates {values}')
  assert not bad, bad


DOCUMENTED = ('README.md', 'docs', 'bench', 'configs', 'data_prep', 'i2v_jax', '.ci')


def documented_modules():
  """Every `python -m NAME` written in the docs, the bench scripts, the configs'
  and modules' docstrings and CI, with the file that writes it."""
  for top in DOCUMENTED:
    top = os.path.join(REPO, top)
    paths = [top] if os.path.isfile(top) else [
        os.path.join(root, name) for root, _, files in os.walk(top) for name in files
        if name.endswith(('.md', '.py', '.sh')) or name == 'run']
    for path in paths:
      text = open(path, encoding='utf-8').read()
      for name in re.findall(r'python -m ([A-Za-z_][\w.]*[\w])', text):
        yield os.path.relpath(path, REPO), name


def test_every_command_in_the_docs_names_a_module_that_exists():
  """A module that moves leaves no stale `python -m` behind it (the sweep's move
  to i2v_jax/experiments once did)."""
  found = list(documented_modules())
  assert any(name == 'i2v_jax.main' for _, name in found)
  bad = []
  for path, name in found:
    if name.split('.')[0] not in ('i2v_jax', 'configs', 'data_prep'):
      continue  # an installed tool (pytest), not ours
    base = os.path.join(REPO, *name.split('.'))
    if not (os.path.isfile(base + '.py') or os.path.isfile(os.path.join(base, '__main__.py'))):
      bad.append(f'{path}: python -m {name}')
  assert not bad, bad


# The names of a run folder's files and folders: only `i2v_jax.run_folder` spells them.
RUN_PATHS = ("'checkpoints'", "'checkpoints_best'", "'metrics.jsonl'", "'results.json'",
             "'results.md'", "'index.jsonl'", "'config.json'", "'tensorboard'",
             "'dataset.json'", "'_sha256'", "'_damaged'", "'_best'", "'training.png'", "'cmc.png'")


def test_only_the_run_folder_module_spells_run_paths():
  bad = []
  for root, _, files in os.walk(os.path.join(REPO, 'i2v_jax')):
    for name in files:
      path = os.path.join(root, name)
      if not name.endswith('.py') or path.endswith(os.path.join('i2v_jax', 'run_folder.py')):
        continue
      text = open(path, encoding='utf-8').read()
      bad += [f'{os.path.relpath(path, REPO)} spells {p}' for p in RUN_PATHS
              if p in text or p.replace("'", '"') in text]
  assert not bad, bad
