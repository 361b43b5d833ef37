//! Shared helpers for the end-to-end scenarios: start the real binary and the simulators.
