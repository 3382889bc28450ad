#!/bin/sh
# Install Debian packages the tests need, each only if its command is missing:
#   sh scripts/install-debian.sh COMMAND=PACKAGE ...   (e.g. bwrap=bubblewrap chromium=chromium)
# One `apt-get update` for all of them, and none when nothing is missing.
set -eu
missing=""
for pair in "$@"; do
    command -v "${pair%%=*}" >/dev/null 2>&1 || missing="$missing ${pair#*=}"
done
[ -n "$missing" ] || exit 0
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
$SUDO apt-get update
# shellcheck disable=SC2086  # one word per package
$SUDO apt-get install -y --no-install-recommends $missing
