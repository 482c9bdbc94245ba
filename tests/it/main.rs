//! One integration binary (one link): a module per feature, all on real servers and fresh databases.

mod admin;
mod cli;
mod durability;
mod helpers;
mod hooks;
mod scenarios;
mod worker;
