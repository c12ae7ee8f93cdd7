"""CI's rule for the extras' tests: a missing extra skips locally and fails under
KERASVIT_REQUIRE_EXTRAS=1, so that a green CI means the browser, W&B and HF tests ran."""

import pytest
from optional_extras import import_extra

MISSING = "kerasvit_no_such_extra"


def test_a_missing_extra_skips_with_its_fix(monkeypatch):
    monkeypatch.delenv("KERASVIT_REQUIRE_EXTRAS", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"not installed \(pip install x\)"):
        import_extra(MISSING, "pip install x")


def test_a_missing_extra_fails_where_extras_are_required(monkeypatch):
    monkeypatch.setenv("KERASVIT_REQUIRE_EXTRAS", "1")
    with pytest.raises(pytest.fail.Exception, match="KERASVIT_REQUIRE_EXTRAS=1"):
        import_extra(MISSING, "pip install x")


def test_an_installed_extra_is_returned(monkeypatch):
    monkeypatch.setenv("KERASVIT_REQUIRE_EXTRAS", "1")
    assert import_extra("json", "-").dumps([1]) == "[1]"
