//! `framewire bench` (W1) keeps its contract: the last line on stdout is one JSON object with
//! `fps`, `dropped`, `p50_ms`, `p99_ms` and `rss_mb` (operators and checks parse it), over the
//! embedded bus with files and over the mock cluster with s3s-fs, with the stage limits it
//! measures on one core before and after its window. Figures are not judged here
//! (speed is measured by running the bench, never asserted in a test).

use crate::common::*;
use std::process::Command;

fn bench(args: &[&str]) -> serde_json::Value {
    let out = Command::new(bin())
        .args([
            "bench",
            "--cameras",
            "2",
            "--duration",
            "3",
            "--warmup",
            "2",
            "--limit-rounds",
            "1",
        ])
        .args([
            "--width",
            "320",
            "--height",
            "240",
            "--out-width",
            "160",
            "--out-height",
            "120",
        ])
        .args(args)
        .env(
            "PATH",
            format!(
                "{}/.cargo/bin:{}",
                env!("HOME"),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .expect("framewire bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line {last:?} is not JSON: {e}"))
}

/// Ensures the JSON line has the contract's fields with sane values, on both setups, each JPEG
/// codec (the built-in Rust one end to end on the first), and the peers (Kafka broker, S3 server)
/// measured as the separate processes they are.
#[test]
fn bench_prints_the_json_contract() {
    let turbo = std::env::var_os("FRAMEWIRE_REQUIRE_TURBOJPEG").is_some();
    for args in [
        &[
            "--bus",
            "embedded",
            "--storage",
            "file",
            "--jpeg-codec",
            "rust",
        ][..],
        &[
            "--bus",
            "mock",
            "--storage",
            "s3",
            "--camera-phase",
            "aligned",
            "--decoders",
            "1",
        ][..],
    ] {
        let r = bench(args);
        let mock = args.contains(&"mock");
        if mock {
            for peer in ["kafka", "s3"] {
                assert!(
                    r["peers"][peer]["rss_mb"].as_f64().unwrap() > 1.0,
                    "{peer}: {r}"
                );
                assert!(
                    r["peers"][peer]["cpu_ms_per_frame"].is_number(),
                    "{peer}: {r}"
                );
            }
            assert_eq!(r["camera_phase"], "aligned", "{r}");
            if turbo {
                assert_eq!(r["jpeg_codec"], "libjpeg-turbo", "{r}");
            }
        } else {
            assert_eq!(r["jpeg_codec"], "rust", "{r}");
            assert_eq!(r["peers"], serde_json::json!({}), "{r}");
        }
        for key in [
            "fps",
            "dropped",
            "p50_ms",
            "p99_ms",
            "rss_mb",
            "input_fps",
            "backlog_growth",
        ] {
            assert!(r[key].is_number(), "{args:?}: {key} in {r}");
        }
        assert!(
            r["frames"].as_u64().unwrap() > 0,
            "{args:?}: frames stored: {r}"
        );
        // Where it stored, named (the temp dir's filesystem: ext4, tmpfs, overlayfs, …).
        let fs = r["storage_fs"].as_str().unwrap_or_default();
        assert!(
            !fs.is_empty() && fs != "unknown",
            "{args:?}: storage_fs in {r}"
        );
        assert!(r["fps"].as_f64().unwrap() > 0.0);
        // The camera whose frames waited longest is named, with its p99.
        let worst = &r["p99_ms_worst_camera"];
        assert!(
            worst["camera"]
                .as_str()
                .unwrap_or_default()
                .starts_with("cam-"),
            "{r}"
        );
        assert!(worst["p99_ms"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["p50_ms"].as_f64().unwrap() <= r["p99_ms"].as_f64().unwrap());
        // Where the latency went: frames' ages when batched, consumed and stored.
        for at in ["batched", "consumed", "stored"] {
            let (p50, p99) = (&r["age_ms"][at]["p50_ms"], &r["age_ms"][at]["p99_ms"]);
            let (p50, p99) = (p50.as_f64(), p99.as_f64());
            assert!(
                p50.is_some_and(|p50| p50 > 0.0 && p50 <= p99.unwrap_or(0.0)),
                "{at}: {r}"
            );
        }
        assert_eq!(r["age_ms"]["stored"]["p99_ms"], r["p99_ms"], "{r}");
        // With a shared decoder, how long complete keyframe intervals waited for it.
        let intervals = r["decoder_wait_ms"]["intervals"].as_u64().unwrap();
        assert_eq!(intervals > 0, mock, "{r}");
        if mock {
            assert!(
                r["decoder_wait_ms"]["p99_ms"].as_f64().unwrap() >= 0.0,
                "{r}"
            );
            assert_eq!(r["decoders_shared"], true, "{r}");
        }
        assert!(r["rss_mb"].as_f64().unwrap() > 1.0);
        // The stage limits were measured before and after the window, and CPU per frame is set
        // against their sum.
        for when in ["before", "after"] {
            let l = &r["stage_limits_ms"][when];
            let parts: f64 = ["decode", "resize_encode", "jpeg_decode", "draw_encode"]
                .iter()
                .map(|k| l[k].as_f64().unwrap_or_else(|| panic!("{when}.{k}: {r}")))
                .inspect(|v| assert!(*v > 0.0, "{when}: {r}"))
                .sum();
            assert!((l["sum"].as_f64().unwrap() - parts).abs() < 1e-6, "{r}");
            assert!(l["detector"].as_f64().unwrap() > 0.0, "{r}");
        }
        assert!(
            r["stage_limits_ms"]["cpu_vs_sum"].as_f64().unwrap() > 0.0,
            "{r}"
        );
        for stage in ["decode", "encode", "inference", "annotate", "store"] {
            assert!(
                r["stage_ms_per_frame"][stage].as_f64().unwrap() > 0.0,
                "{stage}: {r}"
            );
        }
    }
}
