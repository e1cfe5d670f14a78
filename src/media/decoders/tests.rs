//! Tests of `media::decoders`.
use super::*;
use crate::media::file::clips;
use crate::media::h264::{StreamMemory, YuvFrame, is_idr};
use crate::media::synthetic::{SceneConfig, SyntheticCamera};
use std::sync::atomic::{AtomicBool, Ordering};

/// The access units of a stream cut at each IDR: its closed keyframe intervals.
fn intervals(aus: Vec<Vec<u8>>) -> Vec<Vec<Vec<u8>>> {
    let mut out: Vec<Vec<Vec<u8>>> = Vec::new();
    for au in aus {
        match out.last_mut() {
            Some(gop) if !is_idr(&au) => gop.push(au),
            _ => out.push(vec![au]),
        }
    }
    out
}

fn synthetic(seed: u64, n: usize) -> Vec<Vec<u8>> {
    let mut cam = SyntheticCamera::new(SceneConfig {
        width: 320,
        height: 240,
        fps: 25,
        objects: 5,
        seed,
    })
    .unwrap_or_else(|e| panic!("camera: {e}"));
    (0..n)
        .map(|i| {
            cam.next_frame()
                .unwrap_or_else(|e| panic!("frame {i}: {e}"))
                .annexb
        })
        .collect()
}

/// Decodes `gop` on a leased decoder taking up the stream with `memory`, then flushes it.
fn decode_interval(
    pool: &DecoderPool,
    memory: &mut StreamMemory,
    gop: &[Vec<u8>],
) -> Vec<YuvFrame> {
    let mut dec = pool
        .lease(0, None, || false)
        .unwrap_or_else(|e| panic!("lease: {e}"))
        .unwrap_or_else(|| panic!("lease gave up"));
    dec.resume(*memory);
    let mut out = Vec::new();
    for (k, au) in gop.iter().enumerate() {
        match dec.decode(au) {
            Ok(Some(p)) => out.push(p),
            Ok(None) => {}
            Err(e) => panic!("access unit {k} of {}: {e}", gop.len()),
        }
    }
    out.extend(dec.flush().unwrap_or_else(|e| panic!("flush: {e}")));
    *memory = dec.memory();
    out
}

/// One decoder taking turns between two cameras, a keyframe interval each, gives every picture
/// bit for bit as each camera's own decoder does: nothing of one stream leaks into the other.
#[test]
fn a_shared_decoder_matches_dedicated_ones() {
    let streams = [synthetic(4, 75), synthetic(9, 75)];
    let own: Vec<Vec<YuvFrame>> = streams
        .iter()
        .map(|aus| {
            let mut dec = H264Decoder::new().unwrap_or_else(|e| panic!("decoder: {e}"));
            aus.iter()
                .filter_map(|au| dec.decode(au).unwrap_or_else(|e| panic!("{e}")))
                .collect()
        })
        .collect();
    assert_eq!(own[0].len(), 75);
    assert_ne!(own[0][30], own[1][30], "the two scenes differ");
    let pool = DecoderPool::new(1);
    let gops: Vec<_> = streams.iter().cloned().map(intervals).collect();
    assert_eq!(gops[0].len(), 3, "one IDR per second");
    let mut memory = [StreamMemory::default(); 2];
    let mut shared: [Vec<YuvFrame>; 2] = Default::default();
    for g in 0..3 {
        for (s, stream) in gops.iter().enumerate() {
            shared[s].extend(decode_interval(&pool, &mut memory[s], &stream[g]));
        }
    }
    assert_eq!(pool.created(), 1);
    for s in 0..2 {
        assert_eq!(shared[s].len(), own[s].len(), "stream {s}");
        for (i, (a, b)) in shared[s].iter().zip(&own[s]).enumerate() {
            assert!(a == b, "stream {s} picture {i} differs");
        }
    }
}

/// B-frame streams (x264 Main and High, reordering) sharing one decoder interval by interval
/// still show every picture once, in presentation order.
#[test]
fn b_frame_streams_share_a_decoder_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let streams: Vec<Vec<Vec<Vec<u8>>>> = [("high", "2"), ("main", "3")]
        .iter()
        .map(|(profile, bf)| {
            let path = clips::make(
                dir.path(),
                &format!("{profile}.h264"),
                100,
                &[
                    "-profile:v",
                    profile,
                    "-bf",
                    bf,
                    "-g",
                    "25",
                    "-x264-params",
                    "aud=1",
                    "-f",
                    "h264",
                ],
            );
            assert!(clips::pict_types(&path).contains('B'), "{profile}");
            intervals(clips::access_units(&path))
        })
        .collect();
    assert!(streams.iter().all(|s| s.len() >= 4), "IDR every 25 frames");
    let pool = DecoderPool::new(1);
    let mut memory = [StreamMemory::default(); 2];
    let mut shown: [Vec<Option<u32>>; 2] = Default::default();
    for g in 0..streams[0].len().max(streams[1].len()) {
        for s in 0..2 {
            if let Some(gop) = streams[s].get(g) {
                let pictures = decode_interval(&pool, &mut memory[s], gop);
                shown[s].extend(pictures.iter().map(clips::index_of));
            }
        }
    }
    let want: Vec<Option<u32>> = (0..100).map(Some).collect();
    assert_eq!(shown[0], want, "high, -bf 2");
    assert_eq!(shown[1], want, "main, -bf 3");
}

/// The pool never creates more than `size` decoders: a second lease waits until the first is
/// returned, or ends with `None` when its caller gives up.
#[test]
fn leases_wait_for_a_returned_decoder_or_give_up() {
    let pool = DecoderPool::new(1);
    let first = pool.lease(0, None, || false).unwrap().unwrap();
    let mut asked = 0;
    let none = pool
        .lease(0, None, || {
            asked += 1;
            asked == 3
        })
        .unwrap();
    assert!(none.is_none());
    assert_eq!(asked, 3);
    let got = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let lease = pool.lease(0, None, || false).unwrap();
            got.store(lease.is_some(), Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(150));
        assert!(
            !got.load(Ordering::SeqCst),
            "leased while the only decoder was out"
        );
        drop(first);
    });
    assert!(got.load(Ordering::SeqCst));
    assert_eq!(pool.created(), 1);
}

/// Callers waiting for the only decoder get it oldest interval first, whatever order they
/// came in, one after another as each gives it back.
#[test]
fn waiting_callers_are_served_oldest_interval_first() {
    let pool = DecoderPool::new(1);
    let first = pool.lease(0, None, || false).unwrap().unwrap();
    let order = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for since in [30, 10, 20] {
            let (pool, order) = (&pool, &order);
            s.spawn(move || {
                let lease = pool.lease(since, None, || false).unwrap().unwrap();
                order.lock().unwrap().push(since);
                std::thread::sleep(Duration::from_millis(20));
                drop(lease);
            });
            // Each is waiting before the next comes.
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(first);
    });
    assert_eq!(*order.lock().unwrap(), [10, 20, 30]);
}

/// A caller passing `until` stops waiting then, and leaves the line: the next caller is served.
#[test]
fn a_lease_until_a_deadline_ends_then_and_leaves_the_line() {
    let pool = DecoderPool::new(1);
    let first = pool.lease(0, None, || false).unwrap().unwrap();
    let until = Instant::now() + Duration::from_millis(30);
    assert!(pool.lease(5, Some(until), || false).unwrap().is_none());
    assert!(Instant::now() >= until);
    drop(first);
    // The caller that gave up (older, since 5) no longer stands in front.
    let past = Some(Instant::now());
    assert!(pool.lease(50, past, || false).unwrap().is_some());
}
