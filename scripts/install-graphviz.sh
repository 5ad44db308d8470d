#!/bin/sh
# Install Debian's graphviz (the `dot` binary) where we may: root with apt-get. Otherwise
# say how; the toolkit still writes .dot files without it.
set -e
command -v dot >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -qq graphviz >/dev/null 2>&1 || \
        { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq graphviz >/dev/null 2>&1; }
    command -v dot >/dev/null 2>&1 && exit 0
fi
echo "graphviz 'dot' is missing: install it with your package manager (e.g. apt-get install graphviz)" >&2
exit 1
