//! The object key layout, Hive-partitioned so Athena/Glue can query it:
//! `{prefix}/results/camera={id}/date={YYYY-MM-DD}/hour={HH}/{batch_id}.json` and
//! `{prefix}/frames/camera={id}/date=…/hour=…/{batch_id}/{frame_seq:06}.jpg`, and for claim-checked
//! input frames (batches too large for the bus)
//! `{prefix}/claims/camera={id}/date=…/hour=…/{batch_id}/{frame_seq:06}.jpg`. Date and hour are
//! those of the batch's first frame, in UTC.

use chrono::{DateTime, Utc};

fn partition(prefix: &str, kind: &str, camera: &str, first_capture_us: i64) -> String {
    let t: DateTime<Utc> = DateTime::from_timestamp_micros(first_capture_us).unwrap_or_default();
    let head = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    format!(
        "{head}{kind}/camera={camera}/date={}/hour={}",
        t.format("%Y-%m-%d"),
        t.format("%H")
    )
}

pub fn results_key(prefix: &str, camera: &str, first_capture_us: i64, batch_id: &str) -> String {
    format!(
        "{}/{batch_id}.json",
        partition(prefix, "results", camera, first_capture_us)
    )
}

/// An annotated frame of a processed batch.
pub fn frame_key(
    prefix: &str,
    camera: &str,
    first_capture_us: i64,
    batch_id: &str,
    frame_seq: u64,
) -> String {
    jpeg_key(
        prefix,
        "frames",
        camera,
        first_capture_us,
        batch_id,
        frame_seq,
    )
}

/// Where the ingest side puts an original frame of a batch too large for the bus.
pub fn claim_key(
    prefix: &str,
    camera: &str,
    first_capture_us: i64,
    batch_id: &str,
    frame_seq: u64,
) -> String {
    jpeg_key(
        prefix,
        "claims",
        camera,
        first_capture_us,
        batch_id,
        frame_seq,
    )
}

fn jpeg_key(
    prefix: &str,
    kind: &str,
    camera: &str,
    first_capture_us: i64,
    batch_id: &str,
    frame_seq: u64,
) -> String {
    format!(
        "{}/{batch_id}/{frame_seq:06}.jpg",
        partition(prefix, kind, camera, first_capture_us)
    )
}

#[cfg(test)]
mod tests {
    /// Ensures keys follow the documented Hive layout, with and without a prefix.
    #[test]
    fn layout() {
        let t = 1_767_229_200_000_000; // 2026-01-01T01:00:00Z
        assert_eq!(
            super::results_key("", "cam-1", t, "b1"),
            "results/camera=cam-1/date=2026-01-01/hour=01/b1.json"
        );
        assert_eq!(
            super::frame_key("p/q", "cam-1", t, "b1", 7),
            "p/q/frames/camera=cam-1/date=2026-01-01/hour=01/b1/000007.jpg"
        );
        assert_eq!(
            super::claim_key("p", "cam-1", t, "b1", 7),
            "p/claims/camera=cam-1/date=2026-01-01/hour=01/b1/000007.jpg"
        );
    }
}
