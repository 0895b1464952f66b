#!/usr/bin/env bash
# Installs what building lucid's eBPF programs needs, and nothing that is already there.
# Safe to run again: each step checks first. Debian 12, x86_64, rustup on PATH.
set -euo pipefail

# bpf-linker loads the LLVM of the rustc that drives it; both are pinned together.
NIGHTLY="${LUCID_EBPF_NIGHTLY:-nightly-2026-05-20}"
BPF_LINKER_VERSION="0.10.4"

log() { printf 'setup-toolchain: %s\n' "$*" >&2; }

if ! command -v rustup >/dev/null 2>&1; then
    log "rustup not found: install rustup first (https://rustup.rs), then run this script again"
    exit 1
fi

if rustup run "$NIGHTLY" rustc --version >/dev/null 2>&1 \
    && rustup component list --toolchain "$NIGHTLY" --installed 2>/dev/null | grep -q '^rust-src'; then
    log "$NIGHTLY with rust-src already installed"
else
    log "installing $NIGHTLY with rust-src"
    rustup toolchain install "$NIGHTLY" --profile minimal --component rust-src
fi

if command -v bpf-linker >/dev/null 2>&1 \
    && bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
    log "bpf-linker $BPF_LINKER_VERSION already installed"
else
    log "installing bpf-linker $BPF_LINKER_VERSION (takes a few minutes)"
    # 0.10.x loads libLLVM from the rustc that invokes it at link time, so no system LLVM is needed.
    cargo install "bpf-linker@$BPF_LINKER_VERSION" --locked
fi

CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
case ":$PATH:" in
    *":$CARGO_BIN:"*) ;;
    *) log "note: add $CARGO_BIN to PATH so that cargo finds bpf-linker" ;;
esac
log "done"
