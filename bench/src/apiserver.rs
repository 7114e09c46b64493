//! What kube-apiserver served between two scrapes of its own `/metrics`: requests and the
//! time spent on them by verb and resource, and watch events sent by resource. A benchmark
//! whose bound is the API server's CPU shows with it where that CPU goes.

use std::collections::BTreeMap;

use anyhow::Context as _;

use crate::prom::Scrape;

/// Requests served, by verb and resource (`apiserver_request_total`).
const REQUESTS: &str = "apiserver_request_total";
/// Time spent serving them (`apiserver_request_duration_seconds_sum`; watches excluded,
/// their duration is how long they stayed open).
const REQUEST_SECONDS: &str = "apiserver_request_duration_seconds_sum";
/// Watch events sent to watchers, by resource.
const WATCH_EVENTS: &str = "apiserver_watch_events_total";

/// Reads kube-apiserver's `/metrics` with an admin client.
pub async fn scrape(client: &kube::Client) -> anyhow::Result<Scrape> {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .context("building the request for kube-apiserver's /metrics")?;
    let text = client.request_text(request).await.context("reading kube-apiserver's /metrics")?;
    Ok(Scrape::parse(&text))
}

/// One kind of API work: requests (or watch events) and the time spent serving them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Work {
    /// How many.
    pub count: f64,
    /// Seconds spent serving them (0 for watch events).
    pub seconds: f64,
}

/// The API server's work between two scrapes, by `"VERB resource[/subresource]"` (requests)
/// and `"watch events resource"`; kinds with nothing in between are left out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Served {
    /// Work by kind, in name order.
    pub by_kind: BTreeMap<String, Work>,
}

impl Served {
    /// The work done after `before` up to `after`.
    pub fn between(before: &Scrape, after: &Scrape) -> Self {
        let mut by_kind: BTreeMap<String, Work> = BTreeMap::new();
        let mut add = |scrape: &Scrape, sign: f64| {
            for sample in scrape.samples() {
                let (kind, seconds) = match sample.name.as_str() {
                    REQUESTS => (request_kind(sample), false),
                    REQUEST_SECONDS if sample.label("verb") != Some("WATCH") => {
                        (request_kind(sample), true)
                    }
                    WATCH_EVENTS => {
                        let resource = sample.label("resource").or_else(|| sample.label("kind"));
                        (resource.map(|r| format!("watch events {r}")), false)
                    }
                    _ => continue,
                };
                let Some(kind) = kind else { continue };
                let work = by_kind.entry(kind).or_default();
                if seconds {
                    work.seconds += sign * sample.value;
                } else {
                    work.count += sign * sample.value;
                }
            }
        };
        add(after, 1.0);
        add(before, -1.0);
        by_kind.retain(|_, work| work.count > 0.0);
        Self { by_kind }
    }

    /// The kinds with at least `least` per `per` (e.g. per request of a benchmark), most
    /// frequent first.
    pub fn frequent(&self, per: f64, least: f64) -> Vec<(&str, Work)> {
        let mut kinds: Vec<(&str, Work)> = self
            .by_kind
            .iter()
            .filter(|(_, work)| work.count / per >= least)
            .map(|(kind, work)| (kind.as_str(), *work))
            .collect();
        kinds.sort_by(|a, b| b.1.count.total_cmp(&a.1.count));
        kinds
    }

    /// As JSON: `{kind: {count, seconds}}`.
    pub fn json(&self) -> serde_json::Value {
        self.by_kind
            .iter()
            .map(|(kind, work)| {
                (kind.clone(), serde_json::json!({"count": work.count, "seconds": work.seconds}))
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

/// `"VERB resource[/subresource]"` of a request sample; `None` without a resource (requests
/// for paths such as `/metrics` or `/readyz`).
fn request_kind(sample: &crate::prom::Sample) -> Option<String> {
    let verb = sample.label("verb")?;
    let resource = sample.label("resource").filter(|r| !r.is_empty())?;
    Some(match sample.label("subresource").filter(|s| !s.is_empty()) {
        Some(sub) => format!("{verb} {resource}/{sub}"),
        None => format!("{verb} {resource}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_between_two_scrapes_by_kind() {
        let before = Scrape::parse(
            "apiserver_request_total{code=\"201\",resource=\"rebootrequests\",subresource=\"\",verb=\"POST\"} 10\n\
             apiserver_request_duration_seconds_sum{resource=\"rebootrequests\",subresource=\"\",verb=\"POST\"} 1\n\
             apiserver_request_total{code=\"200\",resource=\"leases\",subresource=\"\",verb=\"PUT\"} 4\n\
             apiserver_watch_events_total{group=\"kubetwin.io\",resource=\"rebootrequests\",version=\"v1alpha1\"} 7\n",
        );
        let after = Scrape::parse(
            "apiserver_request_total{code=\"201\",resource=\"rebootrequests\",subresource=\"\",verb=\"POST\"} 110\n\
             apiserver_request_total{code=\"409\",resource=\"rebootrequests\",subresource=\"\",verb=\"POST\"} 2\n\
             apiserver_request_duration_seconds_sum{resource=\"rebootrequests\",subresource=\"\",verb=\"POST\"} 3.5\n\
             apiserver_request_total{code=\"200\",resource=\"rebootrequests\",subresource=\"status\",verb=\"APPLY\"} 50\n\
             apiserver_request_total{code=\"200\",resource=\"leases\",subresource=\"\",verb=\"PUT\"} 4\n\
             apiserver_request_total{code=\"200\",path=\"/metrics\",verb=\"GET\"} 3\n\
             apiserver_request_duration_seconds_sum{resource=\"devices\",subresource=\"\",verb=\"WATCH\"} 900\n\
             apiserver_watch_events_total{group=\"kubetwin.io\",resource=\"rebootrequests\",version=\"v1alpha1\"} 307\n",
        );
        let served = Served::between(&before, &after);
        assert_eq!(
            served.by_kind.keys().map(String::as_str).collect::<Vec<_>>(),
            ["APPLY rebootrequests/status", "POST rebootrequests", "watch events rebootrequests"]
        );
        assert_eq!(served.by_kind["POST rebootrequests"], Work { count: 102.0, seconds: 2.5 });
        assert_eq!(served.by_kind["watch events rebootrequests"].count, 300.0);
        let frequent: Vec<&str> = served.frequent(100.0, 0.6).iter().map(|k| k.0).collect();
        assert_eq!(frequent, ["watch events rebootrequests", "POST rebootrequests"]);
    }
}
