#!/bin/sh
# Install Debian's headless browser (chromium + chromium-driver) where we may: root with apt-get.
# The circuit page's browser tests and the demo's screenshot use it; without it they are
# skipped (tests, with the reason) and the page itself is still written.
command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -qq && apt-get install -y -qq chromium chromium-driver; } >/dev/null 2>&1
    command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 && exit 0
fi
echo "chromium/chromedriver are missing: install them with your package manager" \
     "(e.g. apt-get install chromium chromium-driver); browser tests will be skipped" >&2
exit 1
