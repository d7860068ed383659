"""Builds the optional C fast path of the order book (``orderbook/_cside.c``).

Everything else is in pyproject.toml. The extension is optional: without a C compiler
or Python's headers the build warns and goes on, and ``orderbook.book`` runs its pure-Python
path, which gives the same records (the C code is tested against it).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("orderbook._cside", ["orderbook/_cside.c"], optional=True,
                  extra_compile_args=["-O2"]),
    ],
)
