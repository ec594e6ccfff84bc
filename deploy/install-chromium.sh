#!/usr/bin/env bash
# Debian's Chromium for the crawler's headless browser (Playwright drives it; it never
# downloads a browser of its own). Used by `make setup`; does nothing when installed.
set -euo pipefail
CHROMIUM=${PSS_CHROMIUM_PATH:-/usr/lib/chromium/chromium}
if [ "$CHROMIUM" = auto ]; then CHROMIUM=/usr/lib/chromium/chromium; fi
if [ ! -x "$CHROMIUM" ]; then
    echo "== system packages: chromium (Debian), for the crawler's headless browser"
    SUDO=()
    if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo -n); fi
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium
    test -x "$CHROMIUM" || { echo "chromium installed, but $CHROMIUM is missing" >&2; exit 1; }
fi
"$CHROMIUM" --version
