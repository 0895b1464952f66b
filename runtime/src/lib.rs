//! lucid: an OCI container runtime that shows its work.
