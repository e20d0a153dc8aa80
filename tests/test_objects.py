"""The generic start's pool (data_prep/objects.py): objects, not people."""

import ast
import dataclasses
import inspect

import numpy as np
import pytest

from data_prep import objects, synthetic


def test_the_pool_uses_no_person_renderer(monkeypatch):
  """Nothing of the person generator is imported or called: with every function
  of data_prep.synthetic broken, the pool still generates."""
  tree = ast.parse(inspect.getsource(objects))
  imported = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
              for a in n.names} | {n.module for n in ast.walk(tree)
                                   if isinstance(n, ast.ImportFrom)}
  assert not {'synthetic', 'data_prep.synthetic'} & imported
  for name, _ in inspect.getmembers(synthetic, inspect.isfunction):
    monkeypatch.setattr(synthetic, name, lambda *a, _n=name, **k: pytest.fail(f'called {_n}'))
  splits, protocol = objects.generate(objects.SPECS['tiny'])
  assert protocol['spec'] == dataclasses.asdict(objects.SPECS['tiny'])
  assert {len(v) for v in splits.values()} == {6, 12}  # query 6, train and gallery 12


def test_categories_are_distinct_kinds_and_held_out_images_are_new():
  spec = objects.GENERIC
  cats = objects.categories(spec)
  kinds = [(c['shape'], c['texture'], c['family']) for c in cats]
  for c in cats:  # the main colour lies in its family's box
    low, high = objects.FAMILIES[c['family']]
    assert np.all(c['colours'][0] >= low) and np.all(c['colours'][0] <= high)
  assert len(cats) == 300 and len(set(kinds)) == 300  # no two categories alike
  assert not {c['shape'] for c in cats} & {'person', 'body', 'head'}
  tiny = objects.SPECS['tiny']
  splits, _ = objects.generate(tiny)
  train_pids = {t.pid for t in splits['train']}
  assert {t.pid for t in splits['query']} == {t.pid for t in splits['gallery']} == train_pids
  train_frames = {f for t in splits['train'] for f in t.frames}
  held_out = {f for s in ('query', 'gallery') for t in splits[s] for f in t.frames}
  assert not train_frames & held_out
  # The same category's query and gallery groups are different "cameras" (no junk).
  for q in splits['query']:
    assert all(g.camid != q.camid for g in splits['gallery'] if g.pid == q.pid)
  again, _ = objects.generate(tiny)  # a pure function of the seed
  assert [t.frames for t in again['train']] == [t.frames for t in splits['train']]
  with pytest.raises(ValueError, match='at most 350'):
    objects.categories(dataclasses.replace(tiny, num_classes=351))


def test_the_pool_builds_as_a_dataset(tmp_path):
  from data_prep import build  # imports tensorflow: only when needed
  meta = build.build('objects', str(tmp_path / 'pool'), spec=objects.SPECS['tiny'],
                     show_progress=False)
  assert meta['dataset'] == 'objects' and meta['num_classes'] == 6
  assert meta['splits']['query']['ids'] == 6 and meta['splits']['gallery']['tracklets'] == 12
