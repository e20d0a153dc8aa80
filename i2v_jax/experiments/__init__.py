"""Experiments built on the library: the paired-seed sweep and its report.

Depends on the rest of `i2v_jax`; nothing outside this package imports it
(`tests/test_layout.py`).
"""
