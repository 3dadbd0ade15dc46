#!/usr/bin/env bash
# System packages the test suite needs beyond .venv, from Debian:
# - chromium, for the demo-page browser test;
# - the fonts of the photo generator (model/photo.py): fonts-dejavu-core, fonts-dejavu-extra (the same
#   folder: without it the training fonts are 30 files, not 44, and every rendered set differs),
#   fonts-liberation2 and fonts-freefont-ttf for training, fonts-urw-base35 held out for the test photos;
# - wrk, the HTTP load generator of bench/bench_service.py (benchmarks only).
# Idempotent: installs only what is missing; never fails the test run when apt is unavailable (the tests
# that need a missing package then skip with their reason).
set -u

PACKAGES="chromium fonts-dejavu-core fonts-dejavu-extra fonts-liberation2 fonts-freefont-ttf fonts-urw-base35 wrk"
missing=""
for p in $PACKAGES; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -z "$missing" ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup_system: no apt-get; missing:$missing (the tests that need them will skip)" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
        echo "setup_system: not root and no sudo; missing:$missing (the tests that need them will skip)" >&2
        exit 0
    fi
fi
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq $missing; }; then
    echo "setup_system: installing$missing failed; the tests that need them will skip" >&2
fi
exit 0
