//! Waiting for API state in tests. The time limits only bound a test that would otherwise
//! hang; they are generous so that a slow machine never fails a correct test.

use std::{fmt::Debug, time::Duration};

use kube::{Api, Resource};
use serde::de::DeserializeOwned;

/// Upper bound for any single wait.
pub const WAIT_LIMIT: Duration = Duration::from_secs(180);

/// Polls `name` until `condition` holds and returns the object; panics with the last seen
/// object (and `what`) when the limit passes.
pub async fn wait_for<K>(api: &Api<K>, name: &str, what: &str, condition: impl Fn(&K) -> bool) -> K
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
    let mut last = None;
    loop {
        match api.get_opt(name).await {
            Ok(Some(object)) if condition(&object) => return object,
            Ok(object) => last = object,
            Err(error) => eprintln!("wait_for {name}: {error}"),
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{name}: gave up waiting for {what}; last seen: {last:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
