#!/bin/sh
# Install Debian's bubblewrap, the sandbox code execution runs in, unless it is already there.
# The escape suite (tests/plugins/tools/test_sandbox_escapes.py) needs it.
set -eu
if command -v bwrap >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends bubblewrap
