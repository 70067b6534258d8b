//! How long a mesh's event consumers take to catch up, read from its admin `/metrics`: the
//! bus's `holdfast_events_published_total` per topic against
//! `holdfast_events_consumed_total` per consumer group and topic.
//!
//! A checkout's downstream work (the warehouse's allocation, the notifications, the
//! shipment's order update) runs from its events. A phase whose consumers fall behind looks
//! faster than the mesh can sustain; the checkout bench reports how long the backlog took to
//! clear after its closed loop, so a consumer that stops keeping up shows in the figures.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The bus's counters at one moment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BusCounts {
    /// Events the bus accepted, by topic.
    pub published: HashMap<String, u64>,
    /// Events handled, by (consumer group, topic).
    pub consumed: HashMap<(String, String), u64>,
}

impl BusCounts {
    /// The counters in a Prometheus text exposition.
    pub fn parse(text: &str) -> Self {
        let mut counts = Self::default();
        for line in text.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            // Counters are whole numbers, exposed as floats.
            let value = value as u64;
            if let Some(labels) = series.strip_prefix("holdfast_events_published_total{") {
                if let Some(topic) = label(labels, "topic") {
                    counts.published.insert(topic, value);
                }
            } else if let Some(labels) = series.strip_prefix("holdfast_events_consumed_total{")
                && let (Some(group), Some(topic)) = (label(labels, "group"), label(labels, "topic"))
            {
                counts.consumed.insert((group, topic), value);
            }
        }
        counts
    }

    /// Every consumer group has handled every event published on its topics.
    pub fn caught_up(&self) -> bool {
        self.behind() == 0
    }

    /// Events published, all topics.
    pub fn published_total(&self) -> u64 {
        self.published.values().sum()
    }

    /// Events published and not yet handled, summed over the consumer groups.
    pub fn behind(&self) -> u64 {
        self.consumed
            .iter()
            .map(|((_, topic), consumed)| {
                self.published
                    .get(topic)
                    .map_or(0, |p| p.saturating_sub(*consumed))
            })
            .sum()
    }
}

/// The value of `name` in a label set `a="x",b="y"}` (label values here hold no quotes).
fn label(labels: &str, name: &str) -> Option<String> {
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    let end = labels[start..].find('"')? + start;
    Some(labels[start..end].to_string())
}

/// GET `/metrics` from the admin listener at `admin` (`host:port`, plain HTTP/1.1).
pub async fn scrape(admin: &str) -> anyhow::Result<BusCounts> {
    let mut stream = tokio::net::TcpStream::connect(admin)
        .await
        .with_context(|| format!("connecting to the admin listener {admin}"))?;
    stream
        .write_all(format!("GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("a /metrics answer without a body")?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200"),
        "/metrics answered {}",
        head.lines().next().unwrap_or_default()
    );
    // The admin listener sends the text with a length; a chunked body would need decoding.
    anyhow::ensure!(
        !head.to_ascii_lowercase().contains("transfer-encoding: chunked"),
        "/metrics answered with a chunked body"
    );
    Ok(BusCounts::parse(body))
}

/// How the consumers caught up after a phase.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Drain {
    /// Events the bus had accepted and no group had handled yet when the phase ended
    /// (summed over the groups). Events still in a store's outbox are not in it: the
    /// in-process bus refuses events while a consumer's queue is full, and the relay keeps
    /// them; they show in `caught_up_ms`.
    pub behind_at_end: u64,
    /// From the phase's end until every group had handled every event published, with
    /// nothing more published between two looks 20 ms apart (the outbox's relay is done).
    pub caught_up_ms: f64,
}

/// Polls `admin`'s counters from now until the consumers have caught up (or `limit`).
pub async fn wait_caught_up(admin: &str, limit: Duration) -> anyhow::Result<Drain> {
    let start = Instant::now();
    let first = scrape(admin).await?;
    let behind_at_end = first.behind();
    let mut published_before = first.published_total();
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = scrape(admin).await?;
        if now.caught_up() && now.published_total() == published_before {
            return Ok(Drain {
                behind_at_end,
                caught_up_ms: start.elapsed().as_secs_f64() * 1e3,
            });
        }
        anyhow::ensure!(
            start.elapsed() < limit,
            "the event consumers were still {} events behind {limit:?} after the phase",
            now.behind()
        );
        published_before = now.published_total();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP holdfast_events_published_total Events the bus accepted.
# TYPE holdfast_events_published_total counter
holdfast_events_published_total{topic="holdfast.orders.v1"} 30
holdfast_events_published_total{topic="holdfast.shipments.v1"} 10
holdfast_events_published_total{topic="holdfast.unread.v1"} 4
# TYPE holdfast_events_consumed_total counter
holdfast_events_consumed_total{group="holdfast-notifications",topic="holdfast.orders.v1"} 30
holdfast_events_consumed_total{group="holdfast-notifications",topic="holdfast.shipments.v1"} 7
holdfast_events_consumed_total{group="holdfast-warehouse",topic="holdfast.orders.v1"} 28
holdfast_rpc_requests_total{route="x"} 5
"#;

    #[test]
    fn reads_the_bus_counters_and_counts_what_each_group_has_left() {
        let counts = BusCounts::parse(TEXT);
        assert_eq!(counts.published.len(), 3);
        assert_eq!(counts.published_total(), 44);
        assert_eq!(
            counts.consumed[&("holdfast-warehouse".to_string(), "holdfast.orders.v1".to_string())],
            28
        );
        // 3 shipments for the notifications, 2 orders for the warehouse; a topic nobody
        // reads is not waited for.
        assert_eq!(counts.behind(), 5);
        assert!(!counts.caught_up());
        let done = TEXT.replace("} 7\n", "} 10\n").replace("} 28\n", "} 30\n");
        let counts = BusCounts::parse(&done);
        assert_eq!(counts.behind(), 0);
        assert!(counts.caught_up());
    }

    #[test]
    fn a_group_whose_topic_has_nothing_published_has_nothing_left() {
        let counts = BusCounts::parse("holdfast_events_consumed_total{group=\"g\",topic=\"t\"} 0\n");
        assert_eq!(counts.behind(), 0);
        assert!(counts.caught_up());
    }
}
