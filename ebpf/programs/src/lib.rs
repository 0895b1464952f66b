//! Empty: the programs are the `lucid` binary, built for bpfel-unknown-none by lucid-ebpf's build script.
#![no_std]
