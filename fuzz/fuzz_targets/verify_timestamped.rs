//! Fuzz the timestamped family: Infisical, Standard Webhooks, Stripe, Slack.
#![no_main]

mod common;

use hookgate::verify::Scheme;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, common::Request<'_>)| {
    let scheme = match input.0 % 4 {
        0 => Scheme::named("infisical").unwrap(),
        1 => Scheme::named("standard").unwrap(),
        2 => Scheme::named("stripe").unwrap(),
        _ => Scheme::named("slack").unwrap(),
    };
    common::run(scheme, &input.1);
});
