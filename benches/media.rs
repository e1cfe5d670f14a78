//! Stage benchmarks of the frame pipeline on one core: H.264 decode (openh264), YUV→RGB, resize
//! (fast_image_resize), JPEG encode (jpeg-encoder, with the `image` crate's encoder beside it for
//! comparison), at 640×480 and 1280×720. Input is the synthetic camera's scene, encoded once up
//! front. Run: `cargo bench --bench media` (add `-- --quick` for a short run).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fast_image_resize::images::Image;
use fast_image_resize::{PixelType, ResizeOptions, Resizer};
use framewire::media::h264::H264Decoder;
use framewire::media::jpeg::{FrameEncoder, encode_rgb};
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
        g.bench_function(BenchmarkId::from_parameter(format!("{w}x{h}")), |b| {
            let mut dec = H264Decoder::new().unwrap();
            let mut i = 0;
            b.iter(|| {
                let out = dec.decode(&units[i % units.len()]).unwrap();
                i += 1;
                black_box(out)
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

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("jpeg_encode_q80");
    for (w, h) in SIZES {
        let rgb = rgb_frame(w, h);
        g.bench_function(BenchmarkId::new("jpeg-encoder", format!("{w}x{h}")), |b| {
            b.iter(|| encode_rgb(w, h, black_box(&rgb), 80).unwrap())
        });
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

fn frame_stage(c: &mut Criterion) {
    // The whole per-frame cost after decode, as the capture thread pays it: YUV → RGB → resize to
    // 640×360 → JPEG q80.
    let mut g = c.benchmark_group("yuv_to_jpeg_640x360");
    for (w, h) in SIZES {
        let mut dec = H264Decoder::new().unwrap();
        let yuv = clip(w, h, 1)
            .iter()
            .find_map(|u| dec.decode(u).unwrap())
            .unwrap();
        let mut enc = FrameEncoder::new(640, 360, 80).unwrap();
        g.bench_function(BenchmarkId::from_parameter(format!("from_{w}x{h}")), |b| {
            b.iter(|| enc.encode(black_box(&yuv)).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, decode, yuv_to_rgb, resize, encode, frame_stage);
criterion_main!(benches);
