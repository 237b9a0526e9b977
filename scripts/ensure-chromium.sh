#!/usr/bin/env bash
# Make sure Debian's `chromium` and a CJK font are installed: the browser test (tests/ui) drives
# JupyterLab with it through Playwright, as a learner's browser would render the notebooks.
# Playwright's own `playwright install` (a browser download) is never used.
# Installs the packages when missing and we are root; otherwise says how (the test then skips).
set -euo pipefail
have_font() { command -v fc-list >/dev/null && [ -n "$(fc-list :lang=zh family 2>/dev/null)" ]; }
if command -v chromium >/dev/null && have_font; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian's chromium and fonts-noto-cjk (the browser test) ..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium fonts-noto-cjk fonts-dejavu-core fontconfig >/dev/null
    exit 0
fi
echo "warning: chromium or a CJK font is missing; the browser test will skip." >&2
echo "         Install them, e.g. 'sudo apt-get install chromium fonts-noto-cjk'." >&2
exit 0
