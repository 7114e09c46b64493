//! A small reader of the Prometheus text format (and OpenMetrics, which the operator serves)
//! and histogram quantiles interpolated like PromQL's `histogram_quantile`.

/// One sample line: `name{label="value",...} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name, with its suffix (`_total`, `_bucket`, ...).
    pub name: String,
    /// Labels in the order written.
    pub labels: Vec<(String, String)>,
    /// The value (`+Inf`, `-Inf` and `NaN` included).
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, if present.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn has_labels(&self, wanted: &[(&str, &str)]) -> bool {
        wanted.iter().all(|(k, v)| self.label(k) == Some(*v))
    }
}

/// Every sample of one scrape of a `/metrics` endpoint.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scrape {
    samples: Vec<Sample>,
}

impl Scrape {
    /// Parses the text of a scrape; comment lines and lines that do not parse are skipped.
    pub fn parse(text: &str) -> Self {
        Self { samples: text.lines().filter_map(parse_line).collect() }
    }

    /// All samples.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// Sum of the samples named `name` that carry all of `labels`; `None` when none matches.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .filter(|s| s.name == name && s.has_labels(labels))
            .map(|s| s.value)
            .reduce(|a, b| a + b)
    }

    /// Sum of all samples named `name` (0 when there is none).
    pub fn sum(&self, name: &str) -> f64 {
        self.value(name, &[]).unwrap_or(0.0)
    }

    /// The histogram `name` (samples `{name}_bucket`, `_sum`, `_count`), summed over any
    /// labels other than `le`; `None` when it has no bucket.
    pub fn histogram(&self, name: &str) -> Option<Histogram> {
        self.histogram_with(name, &[])
    }

    /// Like [`Scrape::histogram`], over the series that carry all of `labels` only.
    pub fn histogram_with(&self, name: &str, labels: &[(&str, &str)]) -> Option<Histogram> {
        let bucket_name = format!("{name}_bucket");
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        for sample in self.samples.iter().filter(|s| s.name == bucket_name && s.has_labels(labels))
        {
            let Some(le) = sample.label("le").and_then(parse_value) else {
                continue;
            };
            match buckets.iter_mut().find(|(bound, _)| *bound == le) {
                Some((_, count)) => *count += sample.value,
                None => buckets.push((le, sample.value)),
            }
        }
        if buckets.is_empty() {
            return None;
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let count = self
            .value(&format!("{name}_count"), labels)
            .unwrap_or_else(|| buckets.last().map_or(0.0, |b| b.1));
        let sum = self.value(&format!("{name}_sum"), labels).unwrap_or(0.0);
        Some(Histogram { buckets, sum, count })
    }
}

/// A cumulative histogram: `(upper bound, observations ≤ bound)`, bounds ascending.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// Cumulative buckets, the last one normally `+Inf`.
    pub buckets: Vec<(f64, f64)>,
    /// Sum of all observations.
    pub sum: f64,
    /// Number of observations.
    pub count: f64,
}

/// A quantile read from a histogram.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quantile {
    /// The interpolated value.
    pub value: f64,
    /// The quantile lies in the `+Inf` bucket: the true value is at least `value` (the
    /// largest finite bound), as PromQL's `histogram_quantile` reports it.
    pub beyond_last_bound: bool,
}

impl Histogram {
    /// The observations made since `earlier` (an earlier scrape of the same histogram).
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let before =
            |bound: f64| earlier.buckets.iter().find(|(b, _)| *b == bound).map_or(0.0, |(_, c)| *c);
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|&(bound, count)| (bound, (count - before(bound)).max(0.0)))
                .collect(),
            sum: self.sum - earlier.sum,
            count: (self.count - earlier.count).max(0.0),
        }
    }

    /// The `q` quantile (0 ≤ q ≤ 1), interpolated linearly inside its bucket; `None` without
    /// observations.
    pub fn quantile(&self, q: f64) -> Option<Quantile> {
        let total = self.buckets.last().map(|b| b.1)?;
        if total <= 0.0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * total;
        let index = self
            .buckets
            .iter()
            .position(|&(_, count)| count >= rank)
            .unwrap_or(self.buckets.len() - 1);
        let (upper, count) = self.buckets[index];
        let (lower, below) = match index {
            0 => (0.0_f64.min(upper), 0.0),
            i => self.buckets[i - 1],
        };
        if upper.is_infinite() {
            let largest =
                self.buckets.iter().rev().map(|b| b.0).find(|b| b.is_finite()).unwrap_or(0.0);
            return Some(Quantile { value: largest, beyond_last_bound: true });
        }
        let inside = count - below;
        let value =
            if inside <= 0.0 { upper } else { lower + (upper - lower) * ((rank - below) / inside) };
        Some(Quantile { value, beyond_last_bound: false })
    }
}

/// Parses a sample value (`1`, `2.5e3`, `+Inf`, `-Inf`, `NaN`).
pub fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        other => other.parse().ok(),
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    if name.is_empty() {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(after_brace)?;
        labels = parsed;
        rest = after;
    }
    // The value is the first token; a timestamp or an OpenMetrics exemplar may follow.
    let value = parse_value(rest.split_whitespace().next()?)?;
    Some(Sample { name: name.to_string(), labels, value })
}

/// Parses `key="value",...}` and returns the labels and the text after the `}`.
fn parse_labels(text: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_string();
        rest = rest[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key, value));
        rest = &rest[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP kubetwin_status_writes Status patches sent to the API server, by kind.
# TYPE kubetwin_status_writes counter
kubetwin_status_writes_total{kind="device"} 1234
kubetwin_status_writes_total{kind="rebootrequest"} 56
# TYPE kubetwin_status_queue_depth gauge
kubetwin_status_queue_depth 7
kubetwin_status_updates_merged_total 3.5e3
odd_labels{path="a,b}c",quote="say \"hi\"\n",back="\\"} 1 1700000000
kubetwin_status_staleness_seconds_sum 12.5
kubetwin_status_staleness_seconds_count 10
kubetwin_status_staleness_seconds_bucket{le="0.5"} 2
kubetwin_status_staleness_seconds_bucket{le="1.0"} 6
kubetwin_status_staleness_seconds_bucket{le="2.0"} 10
kubetwin_status_staleness_seconds_bucket{le="+Inf"} 10
with_exemplar_total 4 # {trace_id="abc"} 1.0
this line is garbage
# EOF
"#;

    #[test]
    fn parses_counters_gauges_and_labels() {
        let scrape = Scrape::parse(TEXT);
        assert_eq!(
            scrape.value("kubetwin_status_writes_total", &[("kind", "device")]),
            Some(1234.0)
        );
        assert_eq!(scrape.sum("kubetwin_status_writes_total"), 1290.0);
        assert_eq!(scrape.value("kubetwin_status_queue_depth", &[]), Some(7.0));
        assert_eq!(scrape.sum("kubetwin_status_updates_merged_total"), 3500.0);
        assert_eq!(scrape.value("missing_total", &[]), None);
        assert_eq!(scrape.sum("missing_total"), 0.0);
        assert_eq!(scrape.sum("with_exemplar_total"), 4.0);
        let odd =
            scrape.samples().iter().find(|s| s.name == "odd_labels").expect("odd_labels parsed");
        assert_eq!(odd.label("path"), Some("a,b}c"));
        assert_eq!(odd.label("quote"), Some("say \"hi\"\n"));
        assert_eq!(odd.label("back"), Some("\\"));
        assert_eq!(odd.value, 1.0);
        assert!(!scrape.samples().iter().any(|s| s.name == "this"));
    }

    #[test]
    fn special_values() {
        assert_eq!(parse_value("+Inf"), Some(f64::INFINITY));
        assert_eq!(parse_value("-Inf"), Some(f64::NEG_INFINITY));
        assert!(parse_value("NaN").is_some_and(f64::is_nan));
        assert_eq!(parse_value("x"), None);
    }

    #[test]
    fn histogram_quantiles_interpolate_inside_buckets() {
        let h =
            Scrape::parse(TEXT).histogram("kubetwin_status_staleness_seconds").expect("histogram");
        assert_eq!(h.count, 10.0);
        assert_eq!(h.sum, 12.5);
        // rank 5 lies in (0.5, 1.0] holding observations 3..=6: 0.5 + 0.5 * (5-2)/4.
        let p50 = h.quantile(0.5).expect("p50");
        assert!((p50.value - 0.875).abs() < 1e-9, "{p50:?}");
        assert!(!p50.beyond_last_bound);
        // rank 9.9 lies in (1, 2] holding 4: 1 + (9.9-6)/4.
        let p99 = h.quantile(0.99).expect("p99");
        assert!((p99.value - 1.975).abs() < 1e-9, "{p99:?}");
        // rank 1 lies in the first bucket, interpolated from 0.
        let p10 = h.quantile(0.1).expect("p10");
        assert!((p10.value - 0.25).abs() < 1e-9, "{p10:?}");
    }

    #[test]
    fn quantile_in_the_inf_bucket_reports_the_largest_bound() {
        let h = Histogram {
            buckets: vec![(1.0, 1.0), (2.0, 2.0), (f64::INFINITY, 10.0)],
            sum: 100.0,
            count: 10.0,
        };
        let q = h.quantile(0.99).expect("p99");
        assert_eq!(q.value, 2.0);
        assert!(q.beyond_last_bound);
    }

    #[test]
    fn empty_histograms_have_no_quantile() {
        let h = Histogram { buckets: vec![(1.0, 0.0), (f64::INFINITY, 0.0)], sum: 0.0, count: 0.0 };
        assert_eq!(h.quantile(0.5), None);
        assert_eq!(Scrape::parse("a_total 1").histogram("a"), None);
    }

    #[test]
    fn deltas_between_scrapes() {
        let before = Histogram {
            buckets: vec![(1.0, 5.0), (2.0, 5.0), (f64::INFINITY, 5.0)],
            sum: 2.0,
            count: 5.0,
        };
        let after = Histogram {
            buckets: vec![(1.0, 5.0), (2.0, 9.0), (f64::INFINITY, 9.0)],
            sum: 8.0,
            count: 9.0,
        };
        let delta = after.since(&before);
        assert_eq!(delta.buckets, vec![(1.0, 0.0), (2.0, 4.0), (f64::INFINITY, 4.0)]);
        assert_eq!((delta.sum, delta.count), (6.0, 4.0));
        // All four new observations lie in (1, 2].
        let p50 = delta.quantile(0.5).expect("p50");
        assert!((p50.value - 1.5).abs() < 1e-9, "{p50:?}");
    }
}
