//! The integration tests: one binary, one module per concern, shared helpers in `support`.

mod support;

mod core;
mod entities;
mod hardening;
mod memory;
mod openscape;
mod ops;
mod process;
mod ptk;
mod schemas;
mod voicenter;
