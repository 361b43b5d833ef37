//! The sandboxed plugin runtime: one wasmtime engine, typed bindings for the three worlds, limits and a compiled-component cache.
