"""scripts/test_all_backends.sh runs the suite once per backend. A test whose subject does not
depend on the backend (file layouts, reports, configs as written) runs in one of those passes:
paying its minutes three times did not fit CI's 90 minutes on an AVX2-only machine."""

import os

import pytest

# The pass that ran fastest in CI (torch 1,087 s, TensorFlow 1,471 s, JAX 2,212 s, AVX2).
ONE_PASS_BACKEND = "torch"


def in_one_pass(why):
    """Skips the test outside the ONE_PASS_BACKEND pass; `why` says why one pass is enough."""
    return pytest.mark.skipif(os.environ.get("KERAS_BACKEND") != ONE_PASS_BACKEND,
                              reason=f"{why}: run once, in the {ONE_PASS_BACKEND} pass")
