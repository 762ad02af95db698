# The project metadata lives in pyproject.toml; this file only exists to
# register the cffi extension (codegraph_store._kernel), which setuptools
# cannot declare from pyproject.toml alone.  The builder compiles the C
# sources in csrc/ (portable build: no -march, AVX2 kernels are selected at
# run time).
from setuptools import setup

setup(cffi_modules=["csrc/build_kernel.py:ffibuilder"])
