#!/usr/bin/env bash
# Set up rtverify in ./.venv.
#   ./setup.sh        the runtime: enough for `rtverify demo`, enroll, listen, verify
#   ./setup.sh dev    + training/export (torch 2.13.0 CPU, resemblyzer, librosa), the spoken
#                     challenge (pocketsphinx) and the tests
set -euo pipefail
cd "$(dirname "$0")"
mode="${1:-runtime}"
py="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$py" -m venv .venv
pip=(.venv/bin/python -m pip -q --disable-pip-version-check)
case "$mode" in
  runtime) "${pip[@]}" install -e . ;;
  dev)
    # torch is pinned exactly: a range would pull the registry's CUDA build (gigabytes).
    "${pip[@]}" install -e ".[train,plot,dev,liveness,postgres,wyoming,serve]"
    # resemblyzer's metadata asks for the old `webrtcvad` sdist, which cannot import without
    # pkg_resources; webrtcvad-wheels (a runtime dependency) provides the same module, so install
    # resemblyzer itself without its declared dependencies (librosa comes from the train extra).
    "${pip[@]}" install --no-deps "resemblyzer==0.1.4"
    ;;
  *) echo "usage: ./setup.sh [dev]" >&2; exit 2 ;;
esac
