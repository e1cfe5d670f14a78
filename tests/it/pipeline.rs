//! The whole pipeline on the embedded bus, checked against the synthetic camera's ground truth.

use crate::common::*;
use framewire::daemon::{self, Options};
use framewire::storage::results::BatchResults;
use std::time::Duration;

fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let ix = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let iy = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = ix * iy;
    let area = |r: [f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    inter / (area(a) + area(b) - inter).max(1e-6)
}

/// (frames, recall, precision) over every frame: greedy one-to-one matching at IoU ≥ 0.5 against
/// the fully visible ground-truth objects.
pub fn accuracy(results: &[BatchResults]) -> (usize, f64, f64) {
    let (mut frames, mut truths, mut dets, mut matched) = (0, 0, 0, 0);
    for r in results {
        for f in &r.frames {
            frames += 1;
            let truth: Vec<_> = f.truth.iter().filter(|t| t.fully_visible).collect();
            truths += truth.len();
            dets += f.detections.len();
            let mut used = vec![false; f.detections.len()];
            for t in &truth {
                let best = f
                    .detections
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !used[*i])
                    .map(|(i, d)| (i, iou(d.bbox, t.bbox)))
                    .max_by(|a, b| a.1.total_cmp(&b.1));
                if let Some((i, v)) = best
                    && v >= 0.5
                {
                    used[i] = true;
                    matched += 1;
                }
            }
        }
    }
    (
        frames,
        matched as f64 / truths.max(1) as f64,
        matched as f64 / dets.max(1) as f64,
    )
}

/// Ensures the embedded pipeline turns synthetic video into annotated frames and results whose
/// boxes match the ground truth (recall and precision ≥ 0.9 at IoU ≥ 0.5 over ≥ 200 frames), and
/// that a shutdown drains every batch.
#[test]
fn embedded_pipeline_matches_ground_truth() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = config(
        dir.path(),
        vec![
            camera("cam-1", 1, (640, 480), 10.0),
            camera("cam-2", 2, (640, 480), 10.0),
        ],
        25,
    );
    let d = daemon::start(Options::new(cfg)).expect("daemon starts");
    wait_until("200 stored frames", Duration::from_secs(120), || {
        results(&out).iter().map(|r| r.frames.len()).sum::<usize>() >= 200
    });
    let metrics = d.metrics.clone();
    assert!(d.shutdown(), "shutdown drains every batch");

    let all = results(&out);
    let produced = framewire::metrics::total(&metrics.batches_produced) as usize;
    assert_eq!(
        all.len(),
        produced,
        "every produced batch has exactly one results document"
    );
    let (frames, recall, precision) = accuracy(&all);
    eprintln!("accuracy over {frames} frames: recall {recall:.3}, precision {precision:.3}");
    assert!(frames >= 200);
    assert!(recall >= 0.9, "recall {recall:.3}");
    assert!(precision >= 0.9, "precision {precision:.3}");

    // Annotated frames exist under the keys the results name, are JPEGs of the right size, and
    // carry the box outline in the class colour just left of each box (where the plain frame
    // shows background).
    let mut checked = 0;
    for f in all.iter().flat_map(|r| &r.frames) {
        for d in f.detections.iter().filter(|d| d.bbox[0] >= 8.0) {
            let jpeg = std::fs::read(out.join(&f.annotated_key)).expect("annotated frame stored");
            let (w, h, rgb) =
                framewire::media::jpeg::decode_rgb(&jpeg).expect("annotated frame is a JPEG");
            assert_eq!((w, h), (f.width, f.height));
            let colour = framewire::media::annotate::class_colour(&d.label);
            let (x, y) = (d.bbox[0] as u32 - 1, ((d.bbox[1] + d.bbox[3]) / 2.0) as u32);
            let px = &rgb[((y * w + x) * 3) as usize..][..3];
            let close = px
                .iter()
                .zip(colour)
                .all(|(a, b)| (*a as i32 - b as i32).abs() < 60);
            assert!(
                close,
                "{}: left outline of {d:?} at ({x},{y}) is {px:?}, expected about {colour:?}",
                f.annotated_key
            );
            checked += 1;
        }
        if checked >= 20 {
            break;
        }
    }
    assert!(checked >= 20, "only {checked} boxes checked");
    for r in &all {
        for f in &r.frames {
            assert!(
                out.join(&f.annotated_key).is_file(),
                "{} missing",
                f.annotated_key
            );
        }
    }
}

/// Ensures the README's run command works as documented: `framewire run` with no config writes
/// results under ./framewire-out and exits 0 after draining on Ctrl-C (SIGINT).
#[test]
fn run_on_defaults_then_ctrl_c_drains_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(bin())
        .arg("run")
        .current_dir(dir.path())
        .env("FRAMEWIRE__HTTP__LISTEN", "127.0.0.1:0")
        .env("FRAMEWIRE__BATCH__MAX_WAIT", "2s")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = dir.path().join("framewire-out");
    wait_until(
        "a stored batch from each default camera",
        Duration::from_secs(60),
        || {
            let r = results(&out);
            r.iter().any(|b| b.camera == "cam-1") && r.iter().any(|b| b.camera == "cam-2")
        },
    );
    signal(&child, libc::SIGINT);
    let status = wait_exit(&mut child, Duration::from_secs(40));
    assert!(status.success(), "exit status {status:?}");
    let jpegs = files(&out.join("frames"), "jpg");
    let stored: usize = results(&out).iter().map(|r| r.frames.len()).sum();
    assert_eq!(jpegs.len(), stored, "one annotated JPEG per stored frame");
    assert!(files(&out, "tmp").is_empty());
}

/// Ensures nothing is committed while storage fails: batches wait (retried, not dropped), and once
/// storage works again every produced batch is stored exactly once.
#[test]
fn storage_outage_holds_commits_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    // A file where the results directory must go: every results write fails.
    std::fs::write(out.join("results"), b"in the way").unwrap();
    let cfg = config(dir.path(), vec![camera("cam-1", 1, (320, 240), 5.0)], 5);
    let d = daemon::start(Options::new(cfg)).expect("daemon starts");
    let m = d.metrics.clone();
    wait_until("storage errors", Duration::from_secs(30), || {
        m.stage_errors.with_label_values(&["store"]).get() >= 3
    });
    let text = get(d.http, "/metrics").1;
    let committed: f64 = (0..3)
        .map(|p| {
            metric(
                &text,
                &format!("framewire_committed_offset{{partition=\"{p}\"}}"),
            )
        })
        .sum();
    assert_eq!(
        committed, 0.0,
        "nothing may be committed before it is durable"
    );
    assert_eq!(framewire::metrics::total(&m.batches_stored), 0);
    assert!(m.in_flight_batches.get() > 0);

    let lag = |m: &framewire::metrics::Metrics| {
        (0..3)
            .map(|p| m.consumer_lag.with_label_values(&[&p.to_string()]).get())
            .sum::<i64>()
    };
    wait_until(
        "lag exported while storage is down",
        Duration::from_secs(10),
        || lag(&m) > 0,
    );

    std::fs::remove_file(out.join("results")).unwrap();
    wait_until("stored after recovery", Duration::from_secs(30), || {
        framewire::metrics::total(&m.batches_stored) >= 3
    });
    wait_until("lag back to zero", Duration::from_secs(30), || lag(&m) == 0);
    assert!(d.shutdown());
    let produced = framewire::metrics::total(&m.batches_produced);
    assert_eq!(framewire::metrics::total(&m.batches_stored), produced);
    let docs = results(&out);
    assert_eq!(docs.len() as u64, produced);
    let seqs: Vec<u64> = docs.iter().map(|r| r.sequence).collect();
    assert_eq!(seqs, (0..produced).collect::<Vec<_>>());
}

/// Ensures the schema check used on every stored results document can fail: a valid document
/// passes, and each of a missing field, an unknown field, a wrong schema name, a confidence above
/// 1 and a non-RFC 3339 time is refused.
#[test]
fn results_schema_refuses_wrong_documents() {
    let valid = serde_json::json!({
        "schema": "framewire.results.v1",
        "camera": "cam-1",
        "batch_id": "cam-1-20261201T000000.000000Z-000004",
        "sequence": 4,
        "source_type": "synthetic",
        "model": {"protocol": "builtin", "name": "motion"},
        "frames": [{
            "seq": 7,
            "capture_time": "2026-12-01T00:00:00.000000Z",
            "width": 640,
            "height": 480,
            "annotated_key": "frames/camera=cam-1/x/000007.jpg",
            "detections": [{"label": "red", "confidence": 0.9, "bbox": [1.0, 2.0, 30.0, 40.0]}]
        }],
        "timings_ms": {"inference": 1.0, "annotate": 2.0, "store": 3.0}
    });
    let check = |doc: &serde_json::Value| results_schema_errors(doc).is_empty();
    assert!(check(&valid), "the valid document passes");
    type Breakage = Box<dyn Fn(&mut serde_json::Value)>;
    let wrong: Vec<(&str, Breakage)> = vec![
        (
            "missing frames",
            Box::new(|d| drop(d.as_object_mut().unwrap().remove("frames"))),
        ),
        ("unknown field", Box::new(|d| d["extra"] = 1.into())),
        ("schema name", Box::new(|d| d["schema"] = "other".into())),
        (
            "confidence",
            Box::new(|d| d["frames"][0]["detections"][0]["confidence"] = 1.5.into()),
        ),
        (
            "capture time",
            Box::new(|d| d["frames"][0]["capture_time"] = "yesterday".into()),
        ),
    ];
    for (what, change) in wrong {
        let mut doc = valid.clone();
        change(&mut doc);
        assert!(!check(&doc), "{what}: refused");
    }
}
