//! A real HTTP server on loopback that serves firmware images to the simulator.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{Path, State},
    http::StatusCode,
    routing::get,
};

use crate::error::{Result, io_context};

/// An image: its version, bytes and SHA-256.
#[derive(Clone, Debug)]
pub struct Image {
    /// Version it contains.
    pub version: String,
    /// The bytes served.
    pub bytes: Vec<u8>,
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
}

impl Image {
    /// A made-up image of `version` (a few KiB of bytes that depend on the version).
    pub fn new(version: &str) -> Self {
        let bytes: Vec<u8> =
            format!("kubetwin test firmware {version}\n").bytes().cycle().take(4096).collect();
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        let sha256 = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        Self { version: version.into(), bytes, sha256 }
    }
}

struct Served {
    images: HashMap<String, Vec<u8>>,
    delay: Duration,
}

/// The running server; it stops when dropped.
pub struct FirmwareServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl FirmwareServer {
    /// Serves `images` at `/{version}.bin`, each answer after `delay` (so a download takes a
    /// while, as it would over a real network).
    pub async fn start(images: &[Image], delay: Duration) -> Result<Self> {
        let served = Arc::new(Served {
            images: images
                .iter()
                .map(|i| (format!("{}.bin", i.version), i.bytes.clone()))
                .collect(),
            delay,
        });
        let app = Router::new().route("/{file}", get(serve)).with_state(served);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(io_context("binding the firmware server"))?;
        let addr = listener.local_addr().map_err(io_context("firmware server address"))?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, task })
    }

    /// The URL of `image`.
    pub fn url(&self, image: &Image) -> String {
        format!("http://{}/{}.bin", self.addr, image.version)
    }
}

impl Drop for FirmwareServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    State(served): State<Arc<Served>>,
    Path(file): Path<String>,
) -> std::result::Result<Vec<u8>, StatusCode> {
    tokio::time::sleep(served.delay).await;
    served.images.get(&file).cloned().ok_or(StatusCode::NOT_FOUND)
}
