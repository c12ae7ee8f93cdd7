#!/usr/bin/env bash
# Installs what the demo's browser test (tests/cli/test_demo.py) needs: Debian's Chromium at
# /usr/bin/chromium and the Playwright Python client in .venv, which drives that Chromium
# (Playwright's own browser download does not work offline, so none is fetched).
# Idempotent and quick when both are there. It never fails the caller: where something
# cannot be installed it says why, and the browser test is skipped with that reason.
set -uo pipefail
cd "$(dirname "$0")/.."
PIP=.venv/bin/pip

say() { echo "setup_browser: $*"; }
skipped() { say "$* (the browser test is skipped without it)"; }
chromium_version() { /usr/bin/chromium --version 2>/dev/null || echo chromium; }
playwright_version() { "$PIP" show playwright 2>/dev/null | sed -n 's/^Version: //p'; }

install_chromium() {
    if [ -x /usr/bin/chromium ]; then
        say "$(chromium_version) already installed"
        return
    fi
    if ! command -v apt-get >/dev/null; then
        skipped "no apt-get here; install Chromium at /usr/bin/chromium yourself"
        return
    fi
    if [ "$(id -u)" != 0 ]; then
        skipped "not root, so no apt-get install chromium; run as root or install it yourself"
        return
    fi
    # fonts-liberation: without a font the screenshot's text renders as boxes.
    local packages="chromium fonts-liberation"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends $packages >/dev/null 2>&1; then
        # A fresh machine may have no package lists yet.
        apt-get update -q >/dev/null 2>&1
        apt-get install -y -q --no-install-recommends $packages >/dev/null 2>&1 ||
            { skipped "apt-get install $packages failed"; return; }
    fi
    say "installed $(chromium_version)"
}

install_playwright() {
    if [ ! -x "$PIP" ]; then
        skipped "no .venv; run scripts/setup.sh first"
        return
    fi
    if .venv/bin/python -c "import playwright" 2>/dev/null; then
        say "playwright $(playwright_version) already installed"
        return
    fi
    "$PIP" install --quiet playwright || { skipped "pip install playwright failed"; return; }
    say "installed playwright $(playwright_version)"
}

install_chromium
install_playwright
exit 0
