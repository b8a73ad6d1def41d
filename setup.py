"""setuptools hook: the C kernels are a cffi extension built by build_ext.py."""

from setuptools import setup

setup(cffi_modules=["build_ext.py:ffibuilder"])
