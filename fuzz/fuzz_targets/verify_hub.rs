//! Fuzz the hex-HMAC-of-the-body family: GitHub (sha256, and sha1 when allowed), Gitea/Forgejo, Bitbucket.
#![no_main]

mod common;

use hookgate::verify::Scheme;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, common::Request<'_>)| {
    let scheme = match input.0 % 4 {
        0 => Scheme::Github { allow_sha1: false },
        1 => Scheme::Github { allow_sha1: true },
        2 => Scheme::Gitea,
        _ => Scheme::Bitbucket,
    };
    common::run(scheme, &input.1);
});
