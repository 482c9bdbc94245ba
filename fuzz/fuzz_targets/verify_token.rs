//! Fuzz the shared-token family: GitLab (token or Standard Webhooks headers) and `token` with any options.
#![no_main]

mod common;

use arbitrary::Arbitrary;
use hookgate::verify::{EventFrom, Scheme, TokenOptions};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Options<'a> {
    gitlab: bool,
    header: u8,
    query_param: Option<&'a str>,
    id_header: Option<u8>,
    event: (u8, u8, &'a str),
}

fn event(choice: (u8, u8, &str)) -> EventFrom {
    match choice.0 % 3 {
        0 => EventFrom::Header(common::NAMES[usize::from(choice.1) % common::NAMES.len()].to_string()),
        1 => EventFrom::Field(choice.2.to_string()),
        _ => EventFrom::None,
    }
}

fuzz_target!(|input: (Options<'_>, common::Request<'_>)| {
    let (o, req) = input;
    let scheme = if o.gitlab {
        Scheme::named("gitlab").unwrap()
    } else {
        Scheme::token(TokenOptions {
            header: common::NAMES[usize::from(o.header) % common::NAMES.len()].to_string(),
            query_param: o.query_param.map(str::to_string),
            id_header: o.id_header.map(|i| common::NAMES[usize::from(i) % common::NAMES.len()].to_string()),
            event: event(o.event),
        })
    };
    common::run(scheme, &req);
});
