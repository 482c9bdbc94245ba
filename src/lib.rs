//! hookgate: a self-hosted webhook gateway — receive, verify, store durably, route, and run actions reliably.
#![forbid(unsafe_code)]

pub mod actions;
pub mod admin;
pub mod cli;
pub mod config;
pub mod edge;
pub mod error;
pub mod events;
pub mod github;
pub mod guard;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod retry;
pub mod route;
pub mod sign;
pub mod startup;
pub mod state;
pub mod store;
pub mod template;
pub mod ui;
pub mod verify;
pub mod worker;
