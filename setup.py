import sys
import sysconfig

from setuptools import setup

# cffi builds the engine for CPython's stable ABI (_engine.abi3.so, as its
# docs say): tag the wheel so (cp39-abi3), one wheel for 3.9 and every later
# CPython. Not where cffi builds per version: a debug or free-threaded Python.
stable_abi = not hasattr(sys, "gettotalrefcount") and not sysconfig.get_config_var("Py_GIL_DISABLED")
setup(cffi_modules=["csrc/build_ffi.py:ffibuilder"],
      options={"bdist_wheel": {"py_limited_api": "cp39"}} if stable_abi else {})
