//! Stage benchmarks of the frame pipeline on one core: H.264 decode (openh264), YUV→RGB, resize
//! (fast_image_resize), JPEG encode and decode with each codec (libjpeg-turbo when installed, the
//! built-in jpeg-encoder/zune-jpeg, and the `image` crate's encoder for comparison), the camera
//! side's YUV→JPEG stage, the detector over a batch, the drawing alone and the annotator's draw +
//! encode, at 640×480 and 1280×720 (the process-side stages at 640×360, W1's output size). Input
//! is the synthetic camera's scene, encoded once up front. Run: `cargo bench --bench media` (add
//! `-- --quick` for a short run).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fast_image_resize::images::Image;
use fast_image_resize::{PixelType, ResizeOptions, Resizer};
use framewire::inference::motion::{MotionConfig, MotionDetector};
use framewire::media::annotate::Annotator;
use framewire::media::h264::H264Decoder;
use framewire::media::jpeg::{Codec, FrameEncoder};
use framewire::media::synthetic::{SceneConfig, SyntheticCamera};
use std::hint::black_box;

const SIZES: [(u32, u32); 2] = [(640, 480), (1280, 720)];

fn clip(w: u32, h: u32, frames: usize) -> Vec<Vec<u8>> {
    let mut cam = SyntheticCamera::new(SceneConfig {
        width: w,
        height: h,
        fps: 25,
        objects: 3,
        seed: 7,
    })
    .unwrap();
    (0..frames)
        .map(|_| cam.next_frame().unwrap().annexb)
        .collect()
}

fn rgb_frame(w: u32, h: u32) -> Vec<u8> {
    let cam = SyntheticCamera::new(SceneConfig {
        width: w,
        height: h,
        fps: 25,
        objects: 3,
        seed: 7,
    })
    .unwrap();
    cam.render_rgb(10).0
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_h264");
    for (w, h) in SIZES {
        // 50 frames: two IDRs (one per second) and their P frames, replayed in a loop.
        let units = clip(w, h, 50);
        g.throughput(Throughput::Elements(1));
        // One decoder for all samples (criterion calls the routine once per sample).
        let mut dec = H264Decoder::new().unwrap();
        let mut i = 0;
        g.bench_function(BenchmarkId::from_parameter(format!("{w}x{h}")), |b| {
            b.iter(|| {
                let out = dec.decode(&units[i % units.len()]).unwrap();
                i += 1;
                black_box(out)
            })
        });
    }
    g.finish();
}

/// One 720p frame at a time from each of several streams in turn (`streams` decoders, one
/// clip each), `burst` consecutive frames of a stream per turn: the order in which the daemon's
/// cameras decode. Isolates what many streams cost beyond one (each decoder's pictures and
/// tables must come back into the caches) from the decoder's own speed.
fn decode_streams(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_h264_interleaved_1280x720");
    let (w, h) = (1280, 720);
    let units = clip(w, h, 50);
    for (streams, burst) in [(1, 1), (12, 1), (12, 5)] {
        g.throughput(Throughput::Elements(1));
        let id = format!("{streams}_streams_burst_{burst}");
        // Made once: criterion calls the routine once per sample, and new decoders (zeroed
        // tables, an IDR first) would be measured with it.
        let mut decoders: Vec<H264Decoder> =
            (0..streams).map(|_| H264Decoder::new().unwrap()).collect();
        // Each stream from its own clip's first IDR (same bitstream, own decoder state).
        let mut next = vec![0usize; streams];
        let (mut stream, mut in_burst) = (0, 0);
        g.bench_function(BenchmarkId::from_parameter(id), |b| {
            b.iter(|| {
                let i = next[stream];
                let size = decoders[stream]
                    .decode_picture(&units[i % units.len()])
                    .unwrap()
                    .map(|p| p.view().plane_sizes()[0]);
                next[stream] = i + 1;
                in_burst += 1;
                if in_burst == burst {
                    (stream, in_burst) = ((stream + 1) % streams, 0);
                }
                black_box(size)
            })
        });
    }
    g.finish();
}

fn yuv_to_rgb(c: &mut Criterion) {
    let mut g = c.benchmark_group("yuv_to_rgb");
    for (w, h) in SIZES {
        let mut dec = H264Decoder::new().unwrap();
        let yuv = clip(w, h, 1)
            .iter()
            .find_map(|u| dec.decode(u).unwrap())
            .unwrap();
        let mut rgb = Vec::new();
        g.bench_function(BenchmarkId::from_parameter(format!("{w}x{h}")), |b| {
            b.iter(|| yuv.write_rgb8(black_box(&mut rgb)))
        });
    }
    g.finish();
}

fn resize(c: &mut Criterion) {
    let mut g = c.benchmark_group("resize_to_half");
    for (w, h) in SIZES {
        let rgb = rgb_frame(w, h);
        let src = fast_image_resize::images::ImageRef::new(w, h, &rgb, PixelType::U8x3).unwrap();
        let mut dst = Image::new(w / 2, h / 2, PixelType::U8x3);
        let mut resizer = Resizer::new();
        let opts = ResizeOptions::new();
        g.bench_function(BenchmarkId::from_parameter(format!("{w}x{h}")), |b| {
            b.iter(|| resizer.resize(&src, &mut dst, &opts).unwrap())
        });
    }
    g.finish();
}

/// The codecs to compare: the built-in one, and libjpeg-turbo when this machine has it.
fn codecs() -> Vec<Codec> {
    let mut out = vec![Codec::Rust];
    match framewire::media::turbo::TurboJpeg::get() {
        Ok(t) => out.push(Codec::Turbo(t)),
        Err(e) => eprintln!("libjpeg-turbo not benchmarked: {e}"),
    }
    out
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("jpeg_encode_q80");
    for (w, h) in SIZES {
        let rgb = rgb_frame(w, h);
        for codec in codecs() {
            g.bench_function(BenchmarkId::new(codec.name(), format!("{w}x{h}")), |b| {
                b.iter(|| codec.encode_rgb(w, h, black_box(&rgb), 80).unwrap())
            });
        }
        g.bench_function(BenchmarkId::new("image", format!("{w}x{h}")), |b| {
            b.iter(|| {
                let mut out = Vec::new();
                let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80);
                image::ImageEncoder::write_image(
                    enc,
                    black_box(&rgb),
                    w,
                    h,
                    image::ExtendedColorType::Rgb8,
                )
                .unwrap();
                out
            })
        });
    }
    g.finish();
}

fn jpeg_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("jpeg_decode_rgb");
    for (w, h) in [(640, 360), (1280, 720)] {
        let jpeg = Codec::Rust.encode_rgb(w, h, &rgb_frame(w, h), 80).unwrap();
        for codec in codecs() {
            g.bench_function(BenchmarkId::new(codec.name(), format!("{w}x{h}")), |b| {
                b.iter(|| codec.decode_rgb(black_box(&jpeg)).unwrap())
            });
        }
    }
    g.finish();
}

fn frame_stage(c: &mut Criterion) {
    // The whole per-frame cost after decode, as the capture thread pays it: the I420 planes
    // resized to 640×360 and JPEG-encoded at q80.
    let mut g = c.benchmark_group("yuv_to_jpeg_640x360");
    for (w, h) in SIZES {
        let mut dec = H264Decoder::new().unwrap();
        let yuv = clip(w, h, 1)
            .iter()
            .find_map(|u| dec.decode(u).unwrap())
            .unwrap();
        for codec in codecs() {
            let mut enc = FrameEncoder::with_codec(640, 360, 80, codec).unwrap();
            g.bench_function(
                BenchmarkId::new(codec.name(), format!("from_{w}x{h}")),
                |b| b.iter(|| enc.encode(black_box(&yuv)).unwrap()),
            );
        }
    }
    g.finish();
}

/// 25 JPEG frames of the scene at 640×360, as a batch reaches the process side.
fn batch_640x360() -> Vec<Vec<u8>> {
    let cam = SyntheticCamera::new(SceneConfig {
        width: 640,
        height: 360,
        fps: 25,
        objects: 3,
        seed: 7,
    })
    .unwrap();
    (0..25)
        .map(|i| {
            let (rgb, _) = cam.render_rgb(i);
            Codec::Rust.encode_rgb(640, 360, &rgb, 80).unwrap()
        })
        .collect()
}

fn process_side(c: &mut Criterion) {
    // Per batch of 25 frames at 640×360: the built-in detector (decode + detect) and the
    // annotator (draw + encode at q80), as the process side pays them.
    let jpegs = batch_640x360();
    let refs: Vec<&[u8]> = jpegs.iter().map(Vec::as_slice).collect();
    let mut g = c.benchmark_group("process_batch_25x640x360");
    g.throughput(Throughput::Elements(25));
    for codec in codecs() {
        let detector = MotionDetector::new(MotionConfig::default()).with_codec(codec);
        g.bench_function(BenchmarkId::new("detect", codec.name()), |b| {
            b.iter(|| detector.detect_jpegs_keeping(black_box(&refs)).unwrap())
        });
        let (dets, frames) = detector.detect_jpegs_keeping(&refs).unwrap();
        let annotator = Annotator::with_codec(codec).unwrap();
        if matches!(codec, Codec::Rust) {
            // The drawing alone (boxes and tags on the planes; no codec involved).
            g.bench_function("draw", |b| {
                b.iter(|| {
                    for (f, d) in frames.iter().zip(&dets) {
                        let mut planes = f.clone();
                        annotator.draw_planes(&mut planes, d).unwrap();
                        black_box(&planes);
                    }
                })
            });
        }
        g.bench_function(BenchmarkId::new("annotate", codec.name()), |b| {
            b.iter(|| {
                for (f, d) in frames.iter().zip(&dets) {
                    let mut planes = f.clone();
                    black_box(annotator.annotate_planes(&mut planes, d, 80).unwrap());
                }
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    decode,
    decode_streams,
    yuv_to_rgb,
    resize,
    encode,
    jpeg_decode,
    frame_stage,
    process_side
);
criterion_main!(benches);
