//! The integration tests: one binary, one module per area, real parts at every boundary.

mod config;
mod daemon;
mod ledger;
mod scheduler;
mod support;
