//! Downloads a firmware image over plain HTTP (the simulator's only I/O for firmware).

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

/// Longest download.
const TIMEOUT: Duration = Duration::from_secs(120);

/// The body of `GET url`, or why it could not be had (for the device's error message).
pub async fn fetch(url: &str) -> Result<Vec<u8>, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("invalid URL {url}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("the simulator downloads over http:// only, not {url}"));
    }
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let download = async {
        let response = client.get(uri).await.map_err(|e| format!("GET {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", response.status()));
        }
        let body = response.into_body().collect().await.map_err(|e| format!("GET {url}: {e}"))?;
        Ok(body.to_bytes().to_vec())
    };
    tokio::time::timeout(TIMEOUT, download)
        .await
        .map_err(|_| format!("GET {url}: no complete answer within {}s", TIMEOUT.as_secs()))?
}
