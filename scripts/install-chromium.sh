#!/bin/sh
# Install Debian's Chromium for the Studio's browser tests, unless it is already there.
# Playwright drives it through executable_path: never run `playwright install`.
set -eu
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends chromium
