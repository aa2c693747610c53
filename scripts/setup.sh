#!/usr/bin/env bash
# Installs the Debian packages the build needs (only those missing), then builds.
set -eu
cd "$(dirname "$0")/.."
# build: compiler, BLAS and oneDNN (fp32 GEMM backends, src/compute/gemm.h), JSON, YAML (recipes), zstd, zlib,
# Open MPI, libmicrohttpd (`tinyllama serve`), cairo (`tinyllama plot`);
# tests: python3 (reads a JSON fixture), zstd (makes .zst inputs), mpirun, curl (talks to `serve`);
# fuzzing (make fuzz): clang, libFuzzer (libclang-rt-14-dev), clang's OpenMP (libomp-dev)
pkgs="build-essential libopenblas-openmp-dev libdnnl-dev libcjson-dev libyaml-dev libzstd-dev zlib1g-dev libopenmpi-dev
      openmpi-bin libmicrohttpd-dev libcairo2-dev python3 zstd curl clang libclang-rt-14-dev libomp-dev"
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
    echo "installing:$missing"
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq $missing >/dev/null
fi
make -j"$(nproc)" >/dev/null
