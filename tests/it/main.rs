//! The integration tests: one binary, one module per area, real parts at every boundary.

mod agenda;
mod cli;
mod config;
mod daemon;
mod feed;
mod http;
mod ledger;
mod mail;
mod perf;
mod restart;
mod scheduler;
mod sendfile;
mod service;
mod stop;
mod support;
