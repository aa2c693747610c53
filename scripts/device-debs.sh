#!/usr/bin/env bash
# Run HERE (a machine with apt), before a device call: downloads the build
# dependencies the GPU machine may lack (it reaches no package registry) into
# .device-debs/, ignored by git, for the device call to carry:
#     run(command="bash scripts/device-check.sh", carry=[".device-debs"], timeout_s=420)
# scripts/device-check.sh unpacks them under /tmp/deps (never into /) when the
# libraries are missing there.  ~20 MB (oneDNN ~7 MB of it).
set -eu
cd "$(dirname "$0")/.."
dir=.device-debs
grep -qxF "/$dir/" "$(git rev-parse --git-common-dir)/info/exclude" 2>/dev/null ||
    echo "/$dir/" >>"$(git rev-parse --git-common-dir)/info/exclude"
mkdir -p "$dir"
cd "$dir"
apt-get download libopenblas0-openmp libopenblas-openmp-dev libdnnl2 libdnnl-dev ocl-icd-libopencl1 libcjson1 libcjson-dev libzstd1 libzstd-dev \
    libgfortran5 2>&1 | grep -v "unsandboxed" || true
ls -la
