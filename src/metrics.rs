//! Every Prometheus metric framewire exports, declared in one place.
//!
//! One `Metrics` per daemon, each with its own registry (so several daemons in one test process
//! never mix counts). Names follow Prometheus conventions (`_total`, `_seconds`, `_bytes`); labels
//! are bounded: camera id, stage, actor, result, reason — never a URL or error text.

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub build_info: IntGaugeVec,
    pub frames_captured: IntCounterVec,
    pub frames_decoded: IntCounterVec,
    pub frames_sampled: IntCounterVec,
    pub frames_dropped: IntCounterVec,
    pub decode_errors: IntCounterVec,
    pub h264_decoders: IntGauge,
    /// How long complete keyframe intervals waited for a shared decoder.
    pub h264_decoder_wait: Histogram,
    pub batches_produced: IntCounterVec,
    pub batches_consumed: IntCounter,
    pub batches_stored: IntCounterVec,
    pub messages_rejected: IntCounterVec,
    pub batches_oversize: IntCounterVec,
    pub stage_errors: IntCounterVec,
    pub stage_duration: HistogramVec,
    pub capture_to_stored: HistogramVec,
    /// A frame's age when its batch was sealed (`batched`) and when a consumer took it
    /// (`consumed`): with `capture_to_stored`, where a frame's latency went.
    pub capture_age: HistogramVec,
    pub detections: IntCounterVec,
    pub inference_requests: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub inference_duration: HistogramVec,
    pub actor_restarts: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub config_generation: IntGauge,
    pub camera_up: IntGaugeVec,
    pub camera_reconnects: IntCounterVec,
    pub camera_last_frame_age: GaugeVec,
    pub camera_last_frame: GaugeVec,
    pub in_flight_batches: IntGauge,
    pub committed_offset: IntGaugeVec,
    pub consumer_lag: IntGaugeVec,
    pub consumer_paused: IntGauge,
    pub consumer_assigned: IntGauge,
    pub rebalances: IntCounterVec,
    pub breaker_state: IntGaugeVec,
    pub breaker_transitions: IntCounterVec,
    pub uptime: Gauge,
}

fn int_gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid metric");
    r.register(Box::new(h.clone()))
        .expect("metric registered once");
    h
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

impl Metrics {
    /// Observes the ages at `now` (µs) of frames captured at `captures` (µs), in
    /// `framewire_capture_age_seconds{at}`.
    pub fn frame_ages(&self, at: &str, now: i64, captures: impl IntoIterator<Item = i64>) {
        let age = self.capture_age.with_label_values(&[at]);
        for capture in captures {
            age.observe((now - capture).max(0) as f64 / 1e6);
        }
    }

    pub fn new() -> Self {
        let r = Registry::new();
        let stage_buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        // 0.1 s steps to 3 s (a batch window plus processing), then coarser.
        let mut latency_buckets: Vec<f64> = (1..=30).map(|i| f64::from(i) / 10.0).collect();
        latency_buckets.extend([4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0]);
        let build_info = gauge(
            &r,
            "framewire_build_info",
            "Always 1; labels say which build runs.",
            &["version"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let config_generation = int_gauge(
            &r,
            "framewire_config_generation",
            "Generation of the running config (1 at start, +1 per applied reload).",
        );
        let in_flight_batches = int_gauge(
            &r,
            "framewire_in_flight_batches",
            "Batches consumed and not yet durable in storage.",
        );
        let batches_consumed = IntCounter::new(
            "framewire_batches_consumed_total",
            "Batches taken from the bus by the process side.",
        )
        .expect("valid metric");
        r.register(Box::new(batches_consumed.clone()))
            .expect("metric registered once");
        let camera_last_frame = GaugeVec::new(
            Opts::new(
                "framewire_camera_last_frame_timestamp_seconds",
                "Unix time of the last frame a camera delivered.",
            ),
            &["camera"],
        )
        .expect("valid metric");
        r.register(Box::new(camera_last_frame.clone()))
            .expect("metric registered once");
        let uptime = Gauge::new(
            "framewire_uptime_seconds",
            "Seconds since the daemon started.",
        )
        .expect("valid metric");
        r.register(Box::new(uptime.clone()))
            .expect("metric registered once");
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            let _ = r.register(Box::new(pc));
        }
        let m = Self {
            build_info,
            frames_captured: counter(
                &r,
                "framewire_frames_captured_total",
                "Encoded frames received from a camera source.",
                &["camera"],
            ),
            frames_decoded: counter(
                &r,
                "framewire_frames_decoded_total",
                "Frames decoded from H.264.",
                &["camera"],
            ),
            frames_sampled: counter(
                &r,
                "framewire_frames_sampled_total",
                "Decoded frames kept by sampling, resized and JPEG-encoded.",
                &["camera"],
            ),
            frames_dropped: counter(
                &r,
                "framewire_frames_dropped_total",
                "Frames dropped before batching, by reason.",
                &["camera", "reason"],
            ),
            decode_errors: counter(
                &r,
                "framewire_decode_errors_total",
                "H.264 access units that failed to decode.",
                &["camera"],
            ),
            batches_produced: counter(
                &r,
                "framewire_batches_produced_total",
                "Batches acknowledged by the bus.",
                &["camera"],
            ),
            batches_consumed,
            batches_stored: counter(
                &r,
                "framewire_batches_stored_total",
                "Batches whose frames and results are durable in storage.",
                &["camera"],
            ),
            messages_rejected: counter(
                &r,
                "framewire_messages_rejected_total",
                "Batches not delivered or not processed, by reason: undecodable message, oversize (refused by the batcher), claim_missing, or the stage that rejected it permanently.",
                &["reason"],
            ),
            batches_oversize: counter(
                &r,
                "framewire_batches_oversize_total",
                "Batches over kafka.max_message_bytes, by outcome: refused, or claim_checked (frames sent through storage).",
                &["camera", "outcome"],
            ),
            stage_errors: counter(
                &r,
                "framewire_stage_errors_total",
                "Failed attempts per pipeline stage (retried unless permanent).",
                &["stage"],
            ),
            inference_requests: counter(
                &r,
                "framewire_inference_requests_total",
                "Inference requests by protocol and outcome: ok, transient (retried), permanent (batch rejected).",
                &["protocol", "outcome"],
            ),
            dead_letters: counter(
                &r,
                "framewire_dead_letters_total",
                "Messages sent to the dead-letter topic (or dead-letters/ in storage), by the reason they could not be processed.",
                &["reason"],
            ),
            inference_duration: histogram(
                &r,
                "framewire_inference_request_duration_seconds",
                "Time per inference request (one batch, or one part of a split batch), by protocol.",
                &["protocol"],
                vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            ),
            stage_duration: histogram(
                &r,
                "framewire_stage_duration_seconds",
                "Time spent per pipeline stage (per frame for decode/encode, per batch otherwise).",
                &["stage"],
                stage_buckets.clone(),
            ),
            capture_to_stored: histogram(
                &r,
                "framewire_capture_to_stored_seconds",
                "From a frame's capture to its batch being durable in storage.",
                &["camera"],
                latency_buckets.clone(),
            ),
            capture_age: histogram(
                &r,
                "framewire_capture_age_seconds",
                "A frame's age from its capture when its batch was sealed (at=batched) and when a \
                 consumer took the batch from the bus (at=consumed).",
                &["at"],
                latency_buckets,
            ),
            detections: counter(
                &r,
                "framewire_detections_total",
                "Objects detected, by class.",
                &["label"],
            ),
            actor_restarts: counter(
                &r,
                "framewire_actor_restarts_total",
                "Supervised actor restarts.",
                &["actor", "camera"],
            ),
            config_reloads: counter(
                &r,
                "framewire_config_reloads_total",
                "Config reloads by result (applied, unchanged, invalid).",
                &["result"],
            ),
            config_generation,
            camera_reconnects: counter(
                &r,
                "framewire_camera_reconnects_total",
                "Times a camera's source was reopened after it failed, by reason (disconnect, stall, open, error, unsupported, panic).",
                &["camera", "reason"],
            ),
            camera_last_frame_age: {
                let g = GaugeVec::new(
                    Opts::new(
                        "framewire_camera_last_frame_age_seconds",
                        "Seconds since the camera's last decoded frame (at scrape time).",
                    ),
                    &["camera"],
                )
                .expect("valid metric");
                r.register(Box::new(g.clone()))
                    .expect("metric registered once");
                g
            },
            camera_up: gauge(
                &r,
                "framewire_camera_up",
                "1 while a camera source is delivering frames.",
                &["camera"],
            ),
            camera_last_frame,
            in_flight_batches,
            consumer_lag: gauge(
                &r,
                "framewire_consumer_lag",
                "Messages on the bus not yet committed by this consumer group, per partition (log end minus committed offset).",
                &["partition"],
            ),
            committed_offset: gauge(
                &r,
                "framewire_committed_offset",
                "Next offset committed per bus partition.",
                &["partition"],
            ),
            h264_decoders: int_gauge(
                &r,
                "framewire_h264_decoders",
                "H.264 decoders alive: one per camera, or the shared ones created so far (media.decoders) plus any camera's own. Each holds about 15 MB at 720p.",
            ),
            h264_decoder_wait: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        "framewire_h264_decoder_wait_seconds",
                        "How long a camera's complete keyframe interval waited for a shared H.264 decoder (media.decoders > 0); long waits call for more decoders.",
                    )
                    .buckets(stage_buckets),
                )
                .expect("valid metric");
                r.register(Box::new(h.clone()))
                    .expect("metric registered once");
                h
            },
            consumer_paused: int_gauge(
                &r,
                "framewire_consumer_paused",
                "1 while the consumer has paused its partitions because a downstream (inference, storage) is unhealthy.",
            ),
            consumer_assigned: int_gauge(
                &r,
                "framewire_consumer_assigned_partitions",
                "Bus partitions currently assigned to this consumer group member.",
            ),
            rebalances: counter(
                &r,
                "framewire_consumer_rebalances_total",
                "Partitions assigned to or revoked from this member by consumer group rebalances.",
                &["kind"],
            ),
            breaker_state: gauge(
                &r,
                "framewire_inference_breaker_state",
                "Circuit breaker before the inference service: 0 closed, 1 open (no requests; consumption paused), 2 half-open (one probe).",
                &["protocol"],
            ),
            breaker_transitions: counter(
                &r,
                "framewire_inference_breaker_transitions_total",
                "Circuit breaker state changes, by the state entered.",
                &["protocol", "to"],
            ),
            uptime,
            registry: r,
        };
        // Series with a known, fixed set of labels start at zero.
        for reason in [
            "undecodable",
            "oversize",
            "claim_missing",
            "inference",
            "annotate",
            "store",
        ] {
            m.messages_rejected.with_label_values(&[reason]);
            m.dead_letters.with_label_values(&[reason]);
        }
        for stage in ["produce", "consume", "inference", "annotate", "store"] {
            m.stage_errors.with_label_values(&[stage]);
        }
        for stage in [
            "decode",
            "encode",
            "produce",
            "inference",
            "annotate",
            "store",
        ] {
            m.stage_duration.with_label_values(&[stage]);
        }
        for protocol in ["builtin", "optifye", "oip-v2"] {
            for outcome in ["ok", "transient", "permanent"] {
                m.inference_requests.with_label_values(&[protocol, outcome]);
            }
        }
        for at in ["batched", "consumed"] {
            m.capture_age.with_label_values(&[at]);
        }
        for kind in ["assigned", "revoked"] {
            m.rebalances.with_label_values(&[kind]);
        }
        for result in ["applied", "unchanged", "invalid"] {
            m.config_reloads.with_label_values(&[result]);
        }
        m
    }

    /// Creates a camera's series at zero, so dashboards and alerts see them before the first event.
    pub fn init_camera(&self, camera: &str) {
        for c in [
            &self.frames_captured,
            &self.frames_decoded,
            &self.frames_sampled,
            &self.decode_errors,
            &self.batches_produced,
            &self.batches_stored,
        ] {
            c.with_label_values(&[camera]);
        }
        self.frames_dropped
            .with_label_values(&[camera, "queue_full"]);
        for outcome in ["refused", "claim_checked"] {
            self.batches_oversize.with_label_values(&[camera, outcome]);
        }
        self.capture_to_stored.with_label_values(&[camera]);
        self.camera_up.with_label_values(&[camera]);
    }

    /// Forgets the per-camera series of a removed camera, so labels stay bounded across reloads.
    pub fn forget_camera(&self, camera: &str) {
        let _ = self.camera_up.remove_label_values(&[camera]);
        let _ = self.camera_last_frame.remove_label_values(&[camera]);
        let _ = self.camera_last_frame_age.remove_label_values(&[camera]);
        for actor in ["source", "batcher"] {
            let _ = self.actor_restarts.remove_label_values(&[actor, camera]);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let enc = TextEncoder::new();
        if let Err(e) = enc.encode(&self.registry.gather(), &mut buf) {
            tracing::error!("metrics encoding failed: {e}");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Sum of a counter over all its label values.
pub fn total(v: &IntCounterVec) -> u64 {
    use prometheus::core::Collector;
    v.collect()
        .iter()
        .flat_map(|f| {
            f.get_metric()
                .iter()
                .map(|m| m.get_counter().value() as u64)
        })
        .sum()
}

/// Cumulative buckets `(upper bound, count)` over all label values of a histogram, ending with
/// `(+Inf, sample count)`.
pub fn buckets(h: &impl prometheus::core::Collector) -> Vec<(f64, u64)> {
    merge(buckets_by_label(h).iter().map(|(_, b)| b.as_slice()))
}

/// Cumulative buckets of the same bounds summed into one list; `[(+Inf, 0)]` when there are none.
pub fn merge<'a>(parts: impl IntoIterator<Item = &'a [(f64, u64)]>) -> Vec<(f64, u64)> {
    let mut merged: Vec<(f64, u64)> = Vec::new();
    for part in parts {
        for (i, &(bound, count)) in part.iter().enumerate() {
            if merged.len() <= i {
                merged.push((bound, 0));
            }
            merged[i].1 += count;
        }
    }
    if merged.is_empty() {
        merged.push((f64::INFINITY, 0));
    }
    merged
}

/// The samples `later` has over `earlier` (cumulative buckets of the same bounds, read from one
/// histogram at two moments; `None`: it had none then).
pub fn since(later: &[(f64, u64)], earlier: Option<&[(f64, u64)]>) -> Vec<(f64, u64)> {
    later
        .iter()
        .enumerate()
        .map(|(i, &(bound, count))| {
            let before = earlier.and_then(|e| e.get(i)).map_or(0, |b| b.1);
            (bound, count.saturating_sub(before))
        })
        .collect()
}

/// Cumulative buckets per label value of a one-label histogram (`+Inf` last, as [`buckets`]; the
/// label is empty for a histogram without labels).
pub fn buckets_by_label(h: &impl prometheus::core::Collector) -> Vec<(String, Vec<(f64, u64)>)> {
    h.collect()
        .iter()
        .flat_map(|fam| fam.get_metric())
        .map(|m| {
            let label = m
                .get_label()
                .first()
                .map(|l| l.value().to_string())
                .unwrap_or_default();
            let hist = m.get_histogram();
            let mut b: Vec<(f64, u64)> = hist
                .get_bucket()
                .iter()
                .map(|b| (b.upper_bound(), b.cumulative_count()))
                .collect();
            b.push((f64::INFINITY, hist.get_sample_count()));
            (label, b)
        })
        .collect()
}

/// The `p` quantile of cumulative buckets, interpolated linearly within the bucket it falls in
/// (as Prometheus' `histogram_quantile`); 0 without samples, the highest finite bound when it
/// falls in +Inf.
pub fn quantile(buckets: &[(f64, u64)], p: f64) -> f64 {
    let total = buckets.last().map(|b| b.1).unwrap_or(0);
    if total == 0 {
        return 0.0;
    }
    let want = p * total as f64;
    let mut lower = (0.0, 0u64);
    for &(bound, count) in buckets {
        if count as f64 >= want {
            if bound.is_infinite() {
                return lower.0;
            }
            let inside = (count - lower.1) as f64;
            let frac = if inside == 0.0 {
                1.0
            } else {
                (want - lower.1 as f64) / inside
            };
            return lower.0 + (bound - lower.0) * frac;
        }
        lower = (bound, count);
    }
    lower.0
}

/// Approximate (p50, p99) over all label values of a histogram.
pub fn quantiles(h: &HistogramVec) -> (f64, f64) {
    let b = buckets(h);
    (quantile(&b, 0.5), quantile(&b, 0.99))
}

#[cfg(test)]
mod quantile_tests {
    use super::*;

    /// Ensures quantiles interpolate within a bucket and handle empty and +Inf cases.
    #[test]
    fn quantile_interpolates() {
        let b = vec![(0.1, 10), (0.2, 30), (f64::INFINITY, 40)];
        assert!((quantile(&b, 0.5) - 0.15).abs() < 1e-9);
        assert!((quantile(&b, 0.25) - 0.1).abs() < 1e-9);
        assert_eq!(quantile(&b, 0.99), 0.2);
        assert_eq!(quantile(&[(f64::INFINITY, 0)], 0.5), 0.0);
    }

    /// Per-label buckets keep each camera's samples apart, and add up to the merged ones.
    #[test]
    fn buckets_by_label_split_the_merged_ones() {
        let h = HistogramVec::new(
            prometheus::HistogramOpts::new("t", "t").buckets(vec![1.0, 2.0]),
            &["camera"],
        )
        .unwrap();
        for v in [0.5, 0.7, 1.5] {
            h.with_label_values(&["a"]).observe(v);
        }
        h.with_label_values(&["b"]).observe(9.0);
        let mut by = buckets_by_label(&h);
        by.sort_by(|x, y| x.0.cmp(&y.0));
        let inf = f64::INFINITY;
        assert_eq!(
            by,
            vec![
                ("a".to_string(), vec![(1.0, 2), (2.0, 3), (inf, 3)]),
                ("b".to_string(), vec![(1.0, 0), (2.0, 0), (inf, 1)]),
            ]
        );
        assert_eq!(buckets(&h), vec![(1.0, 2), (2.0, 3), (inf, 4)]);
        assert_eq!(
            merge(by.iter().map(|(_, b)| b.as_slice())),
            buckets(&h),
            "merging the per-label buckets gives the merged ones"
        );
        assert_eq!(merge([]), vec![(inf, 0)]);
        let earlier = by[0].1.clone();
        h.with_label_values(&["a"]).observe(1.2);
        let later = buckets_by_label(&h);
        let a = &later.iter().find(|(l, _)| l == "a").unwrap().1;
        assert_eq!(since(a, Some(&earlier)), vec![(1.0, 0), (2.0, 1), (inf, 1)]);
        assert_eq!(since(a, None), *a, "nothing before: all of it");
        assert_eq!(
            since(a, Some(&[(inf, 0)])),
            *a,
            "no samples before: only +Inf was read"
        );
        assert_eq!(
            quantile(&by[1].1, 0.99),
            2.0,
            "b's sample is past the last bound"
        );
    }
}
