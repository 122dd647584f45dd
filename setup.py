"""Build hook for the native log store; all metadata lives in pyproject.toml.

``cffi_modules`` compiles ``engine.storage._raftlog`` from native/ at install time.
"""

from setuptools import setup

setup(cffi_modules=["engine/storage/_native_build.py:ffibuilder"])
