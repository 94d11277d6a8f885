#!/usr/bin/env bash
# Installs the Debian packages named on the command line that are not installed yet, in one
# apt-get call, as root or through sudo. Prints what it installs; silent when nothing is missing.
#   scripts/apt-install.sh libclang-dev clang
set -euo pipefail
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
missing=()
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
