//! Counters and histograms for `/metrics`, in Prometheus' text format. Hand-written: a few
//! series do not justify a metrics framework.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Bucket bounds (seconds) for build and phase durations.
const BUCKETS: [f64; 10] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += v;
    }
}

#[derive(Default)]
struct Inner {
    webhooks: BTreeMap<(String, String), u64>,
    reports: BTreeMap<String, u64>,
    build_seconds: BTreeMap<String, Histogram>,
    phase_seconds: BTreeMap<String, Histogram>,
}

/// A gauge read at scrape time: name, help, and `(labels, value)` samples.
pub type Gauge<'a> = (&'a str, &'a str, Vec<(String, f64)>);

/// Process-wide metrics; the store supplies the gauges (queue depth, builds by state).
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// A webhook request, by event name and how it was answered.
    pub fn webhook(&self, event: &str, result: &str) {
        let event =
            if event.len() <= 40 && event.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                event
            } else {
                "other"
            };
        self.with(|m| {
            *m.webhooks
                .entry((event.to_string(), result.to_string()))
                .or_default() += 1
        });
    }

    /// A report delivery attempt: `delivered`, `retry` or `abandoned`.
    pub fn report(&self, result: &str) {
        self.with(|m| *m.reports.entry(result.to_string()).or_default() += 1);
    }

    pub fn build_finished(&self, state: &str, seconds: f64) {
        self.with(|m| {
            m.build_seconds
                .entry(state.to_string())
                .or_default()
                .observe(seconds)
        });
    }

    pub fn phase_finished(&self, phase: &str, seconds: f64) {
        self.with(|m| {
            m.phase_seconds
                .entry(phase.to_string())
                .or_default()
                .observe(seconds)
        });
    }

    /// The text exposition; `gauges` are `(name, help, [(labels, value)])` read from the store.
    pub fn render(&self, gauges: &[Gauge<'_>]) -> String {
        let mut out = String::new();
        for (name, help, values) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (labels, v) in values {
                if labels.is_empty() {
                    let _ = writeln!(out, "{name} {v}");
                } else {
                    let _ = writeln!(out, "{name}{{{labels}}} {v}");
                }
            }
        }
        self.with(|m| {
            let _ = writeln!(out, "# HELP packetary_webhooks_total Webhook requests by event and result.\n# TYPE packetary_webhooks_total counter");
            for ((event, result), n) in &m.webhooks {
                let _ = writeln!(out, "packetary_webhooks_total{{event=\"{event}\",result=\"{result}\"}} {n}");
            }
            let _ = writeln!(out, "# HELP packetary_report_deliveries_total Commit status deliveries by result.\n# TYPE packetary_report_deliveries_total counter");
            for (result, n) in &m.reports {
                let _ = writeln!(out, "packetary_report_deliveries_total{{result=\"{result}\"}} {n}");
            }
            histogram(&mut out, "packetary_build_duration_seconds", "Build durations by final state.", "state", &m.build_seconds);
            histogram(&mut out, "packetary_phase_duration_seconds", "Build phase durations.", "phase", &m.phase_seconds);
        });
        out
    }
}

fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    series: &BTreeMap<String, Histogram>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (value, h) in series {
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{label}=\"{value}\",le=\"{b}\"}} {}",
                h.counts[i]
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{label}=\"{value}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(out, "{name}_sum{{{label}=\"{value}\"}} {}", h.sum);
        let _ = writeln!(out, "{name}_count{{{label}=\"{value}\"}} {}", h.count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.webhook("push", "accepted");
        m.webhook("push", "accepted");
        m.report("delivered");
        m.build_finished("succeeded", 12.0);
        let text = m.render(&[(
            "packetary_queue_depth",
            "Queued builds.",
            vec![(String::new(), 3.0)],
        )]);
        assert!(text.contains("packetary_queue_depth 3"), "{text}");
        assert!(
            text.contains("packetary_webhooks_total{event=\"push\",result=\"accepted\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "packetary_build_duration_seconds_bucket{state=\"succeeded\",le=\"15\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "packetary_build_duration_seconds_bucket{state=\"succeeded\",le=\"5\"} 0"
            ),
            "{text}"
        );
    }
}
