//! Fuzz the hex-HMAC-of-the-body family: GitHub (sha256, and sha1 when allowed), Gitea/Forgejo, Bitbucket.
#![no_main]

mod common;

use hookgate::verify::Scheme;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, common::Request<'_>)| {
    let scheme = match input.0 % 4 {
        0 => Scheme::github(false),
        1 => Scheme::github(true),
        2 => Scheme::named("gitea").unwrap(),
        _ => Scheme::named("bitbucket").unwrap(),
    };
    common::run(scheme, &input.1);
});
