//! The integration tests: one binary, one module per concern, shared helpers in `support`.

#[macro_use]
mod support;

mod cluster;
mod cluster_entities;
mod connectors;
mod core;
mod ctips;
mod edge;
mod entities;
mod fidelity;
mod hardening;
mod instances;
mod memory;
mod openscape;
mod openscape_state;
mod operations;
mod ops;
mod pgloss;
mod platform;
mod postgres;
mod process;
mod ptk;
mod ptk_state;
mod receivers;
mod schemas;
mod service;
mod simulate;
mod tls;
mod told;
mod vcapi;
mod vcapi_sim;
mod voicenter;
