//! minimal-server: verify the GitHub HMAC of each POST and answer 202; the ceiling hookgate is compared to.

use std::convert::Infallible;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use subtle::ConstantTimeEq;

async fn handle(req: Request<Incoming>, secret: &'static [u8]) -> Result<Response<Full<Bytes>>, Infallible> {
    let signature = req
        .headers()
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256="))
        .and_then(|v| hex::decode(v).ok())
        .unwrap_or_default();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(status(StatusCode::BAD_REQUEST)),
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(&body);
    let expected = mac.finalize().into_bytes();
    if signature.len() == expected.len() && bool::from(expected.as_slice().ct_eq(&signature)) {
        Ok(status(StatusCode::ACCEPTED))
    } else {
        Ok(status(StatusCode::UNAUTHORIZED))
    }
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
    *response.status_mut() = code;
    response
}

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18090".into());
    let secret: &'static [u8] = Box::leak(std::env::var("SECRET").unwrap_or_default().into_bytes().into_boxed_slice());
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, secret));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
