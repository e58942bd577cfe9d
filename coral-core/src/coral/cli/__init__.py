"""The ``coral`` command line (entry point ``coral.cli.main:main``)."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
