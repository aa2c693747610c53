#!/usr/bin/env bash
# Installs what the build needs, then runs every test (normal build, ASan+UBSan build,
# CLI tests).  Ends with "N passed, N failed".
set -eu
cd "$(dirname "$0")/.."
scripts/setup.sh
exec tests/run.sh
