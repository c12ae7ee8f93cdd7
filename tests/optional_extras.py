"""Tests of optional extras (the browser, W&B, transformers): skipped, with the fix, where an
extra is not installed, except under KERASVIT_REQUIRE_EXTRAS=1 (CI, whose set-up installs them
all), where a missing extra fails the test: CI cannot pass by skipping what users run."""

import importlib
import os

import pytest


def skip_or_fail(reason):
    if os.environ.get("KERASVIT_REQUIRE_EXTRAS") == "1":
        pytest.fail(f"{reason}; KERASVIT_REQUIRE_EXTRAS=1 says it must be installed")
    pytest.skip(reason)


def import_extra(module, fix):
    """The module, or a skip (a failure under KERASVIT_REQUIRE_EXTRAS=1) naming the fix."""
    try:
        return importlib.import_module(module)
    except ImportError:
        skip_or_fail(f"{module} is not installed ({fix})")
