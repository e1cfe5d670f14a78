//! The wire decoder is total: any bytes give a batch or an error, never a panic.

use framewire::wire::{self, v1};
use rand::{Rng, SeedableRng};

fn sample() -> v1::FrameBatch {
    v1::FrameBatch {
        camera_id: "cam-1".into(),
        batch_id: wire::batch_id("cam-1", 1_767_225_600_000_000, 3),
        sequence: 3,
        frames: (0..4)
            .map(|i| v1::Frame {
                seq: i,
                capture_time_us: 1_767_225_600_000_000 + i as i64 * 200_000,
                width: 64,
                height: 48,
                jpeg: vec![0xFF, 0xD8, i as u8, 0xFF, 0xD9],
                truth: vec![v1::TruthBox {
                    label: "red".into(),
                    bbox: Some(v1::Box {
                        x1: 1.0,
                        y1: 2.0,
                        x2: 3.0,
                        y2: 4.0,
                    }),
                    fully_visible: true,
                }],
            })
            .collect(),
        created_time_us: 1,
        source_type: "synthetic".into(),
        jpeg_quality: 80,
    }
}

/// Ensures a batch survives encode → decode unchanged, with the documented headers.
#[test]
fn round_trip() {
    let b = sample();
    let (bytes, headers) = wire::encode(&b);
    assert_eq!(wire::decode(&bytes, &headers).unwrap(), b);
    let h = |k: &str| {
        headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
    };
    assert_eq!(h("camera-id").as_deref(), Some("cam-1"));
    assert_eq!(h("batch-seq").as_deref(), Some("3"));
    assert_eq!(h("content-type").as_deref(), Some(wire::CONTENT_TYPE_V1));
}

/// Ensures random, truncated and bit-flipped bytes never panic the decoder, and that a wrong
/// content type or an empty batch is an error.
#[test]
fn garbage_never_panics() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let (good, headers) = wire::encode(&sample());
    let mut errors = 0;
    for i in 0..20_000 {
        let bytes: Vec<u8> = match i % 3 {
            0 => (0..rng.random_range(0..512))
                .map(|_| rng.random())
                .collect(),
            1 => good[..rng.random_range(0..good.len())].to_vec(),
            _ => {
                let mut b = good.clone();
                for _ in 0..rng.random_range(1..8) {
                    let at = rng.random_range(0..b.len());
                    b[at] ^= 1 << rng.random_range(0..8);
                }
                b
            }
        };
        if wire::decode(&bytes, &[]).is_err() {
            errors += 1;
        }
    }
    assert!(
        errors > 10_000,
        "most garbage must be rejected, {errors} were"
    );
    let bad_ct = vec![("content-type".to_string(), b"application/json".to_vec())];
    assert!(wire::decode(&good, &bad_ct).is_err());
    assert!(
        wire::decode(&[], &headers).is_err(),
        "an empty batch is invalid"
    );
}
