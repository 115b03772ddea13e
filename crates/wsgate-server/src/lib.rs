//! The `wsgate` server: the library's pieces turned into a gateway configured by one TOML
//! file. A library so the binary stays a thin shell (`main.rs`) and so the config and frame
//! parsers can be driven by the fuzzers in `fuzz/`; its API is the binary's, not a stable one.
//!
//! No unsafe code, but for the one block in `wire::register` (allowed there, with its SAFETY
//! argument); anything else is refused by the compiler.
#![deny(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod broker;
pub mod browser_client;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod endpoints;
pub mod events;
pub mod gateway;
pub mod handshake_status;
pub mod keys;
pub mod listener;
pub mod log_format;
pub mod log_writer;
pub mod notify;
pub mod reload;
pub mod revoke;
pub mod serve;
pub mod shutdown;
pub mod ssf;
pub mod store;
pub mod telemetry;
pub mod wire;
