//! The integration tests: one binary, one module per area, real parts at every boundary.

mod config;
mod feed;
mod http;
mod mail;
mod support;
