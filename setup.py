"""Only the optional C speedups live here; everything else is in pyproject.toml.

``optional=True``: on a machine without a C compiler the build goes on without
them and pgveil uses the pure-Python versions (proxy/wire/walk.py, rewrite/shapes.py) and
relays pass-through sessions on the event loop (no proxy/_relay.c thread).
"""
from setuptools import Extension, setup

setup(ext_modules=[
    Extension("proxy.wire._walk", ["proxy/wire/_walk.c"], optional=True),
    Extension("proxy._relay", ["proxy/_relay.c"], include_dirs=["rewrite"], depends=["rewrite/fastkey_core.h"],
              libraries=["dl"], optional=True),
    Extension("rewrite._fastkey", ["rewrite/_fastkey.c"], optional=True),
])
