#!/bin/sh
# Install what pip needs to build llama_cpp_python from source (a C++ compiler and CMake), from
# Debian's packages, unless they are already there. Used by `tox -e real`.
set -eu
if command -v c++ >/dev/null 2>&1 && command -v cmake >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends g++ make cmake
