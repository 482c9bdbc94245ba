//! Fuzz the configurable `hmac` scheme with arbitrary options (algorithm, encoding, prefix, timestamp, content).
#![no_main]

mod common;

use arbitrary::Arbitrary;
use hookgate::verify::{Algorithm, Encoding, EventFrom, HmacOptions, Scheme, TimeUnit};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Options<'a> {
    signature_header: u8,
    algorithm: u8,
    base64: bool,
    prefix: &'a str,
    timestamp_header: Option<u8>,
    millis: bool,
    content: &'a str,
    id_header: Option<u8>,
    event: (u8, u8, &'a str),
}

fn name(i: u8) -> String {
    common::NAMES[usize::from(i) % common::NAMES.len()].to_string()
}

fuzz_target!(|input: (Options<'_>, common::Request<'_>)| {
    let (o, req) = input;
    let options = HmacOptions {
        signature_header: name(o.signature_header),
        algorithm: match o.algorithm % 3 {
            0 => Algorithm::Sha1,
            1 => Algorithm::Sha256,
            _ => Algorithm::Sha512,
        },
        encoding: if o.base64 { Encoding::Base64 } else { Encoding::Hex },
        prefix: o.prefix.to_string(),
        timestamp_header: o.timestamp_header.map(name),
        timestamp_unit: if o.millis { TimeUnit::Millis } else { TimeUnit::Seconds },
        content: o.content.to_string(),
        id_header: o.id_header.map(name),
        event: match o.event.0 % 3 {
            0 => EventFrom::Header(name(o.event.1)),
            1 => EventFrom::Field(o.event.2.to_string()),
            _ => EventFrom::None,
        },
    };
    common::run(Scheme::hmac(options), &req);
});
