//! One integration binary (one link): a module per feature, all on real servers and fresh databases.
//!
//! `store_test!` runs a test once per store: `…::sqlite` always, `…::postgres` against a fresh schema when
//! `HOOKGATE_TEST_POSTGRES_URL` is set (and says it was skipped otherwise).

macro_rules! store_test {
    ($(#[$meta:meta])* async fn $name:ident($backend:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[$meta])*
            async fn sqlite() {
                let $backend = crate::helpers::Backend::Sqlite;
                $body
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[$meta])*
            async fn postgres() {
                let Some($backend) = crate::helpers::Backend::postgres() else {
                    eprintln!("skipped: HOOKGATE_TEST_POSTGRES_URL is not set");
                    return;
                };
                $body
            }
        }
    };
}

mod admin;
mod admin_auth;
mod browser;
mod bulk;
mod cli;
mod cluster;
mod commands_env;
mod delivery;
mod deploy;
mod durability;
mod edge;
mod events;
mod flux;
mod github;
mod helpers;
mod hooks;
mod hostile;
mod http_tls;
mod layout;
mod logs;
mod ops_store;
mod poison;
mod postgres_tls;
mod quickstart;
mod reaper;
mod replay;
mod roundtrip;
mod scenarios;
mod search;
mod secret_sync;
mod shared_state;
mod stats;
mod store_url;
mod worker;
