//! convenor: the meeting calendar feed and meeting mail of a network of senior officers.
//!
//! Data flows one way (see ARCHITECTURE.md): config -> schedule -> ledger -> mail, and
//! config -> feed -> HTTP. [`model`], [`schedule`] and the rendering modules are pure; files,
//! sockets and the clock are touched only at the edges.

// Every public item has a doc comment; CI's clippy run (-D warnings) keeps it so.
#![warn(missing_docs)]

pub mod agenda;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod digest;
pub mod feed;
pub mod hangup;
pub mod health;
pub mod http;
pub mod ledger;
pub mod lock;
pub mod logging;
pub mod mail;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod parallel;
pub mod plan;
pub mod reload_status;
pub mod revision;
pub mod schedule;
pub mod scheduler;
pub mod sqlite_file;
pub mod state_owner;
