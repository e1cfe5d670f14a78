//! Video files as camera sources: `file:///path.mp4` (also `.m4v`, `.mov`) and raw Annex B H.264
//! (`.h264`, `.264`), turned into one Annex B access unit per call, in decode order.
//!
//! [`FileSource`] owns the open file and its pacing. `DefaultOpener` opens it for `file://` cameras
//! and the capture loop (`actors::source`) calls [`FrameSource::next_unit`] until `Ok(None)` (end
//! of file), then flushes the decoder and, with `loop = true`, opens the file again.
//! MP4: the first H.264 (`avc1`) video track, demuxed with the `mp4` crate; samples are converted
//! from length-prefixed (AVCC) to Annex B, with the avcC SPS/PPS before every sync sample.
//! Raw H.264: NAL units are grouped into access units (a new one starts at an AUD/SPS/PPS/SEI or
//! at a slice with `first_mb_in_slice == 0` after the current unit's slices).
//! `pace = "realtime"` sleeps so units come out at the file's rate (MP4 decode timestamps; raw:
//! the SPS frame rate, else 25 fps), like a live camera (see [`Pacer`]); `"fast"` never sleeps.
//! `capture_us` is the wall clock when the unit was due (at emission with `"fast"`), strictly
//! increasing.
//! Failures: unreadable or corrupt files → `SourceError::Open` naming the path; a video codec
//! other than H.264 → `SourceError::Unsupported` naming it; a sample that cannot be read later
//! (truncated or corrupt file) → `SourceError::Read`. Nothing here panics on bad input (the MP4
//! parser's own panics are caught).

use super::h264::{SpsInfo, slice_start};
use super::source::{EncodedUnit, FrameSource, SourceError, now_us};
use crate::config::{CameraConfig, Pace};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Largest sample / NAL unit accepted (a corrupt size must not allocate gigabytes).
const MAX_UNIT: usize = 64 << 20;
/// A gap between two timestamps is waited out for at most this long.
const MAX_GAP: Duration = Duration::from_secs(1);

/// A file played as a camera.
pub struct FileSource {
    camera: String,
    path: PathBuf,
    pace: Pace,
    units: Units,
    pacer: Pacer,
    last_us: i64,
}

/// Real-time pacing of a file played as a live camera. Unit `ts` (seconds, file time) is due its
/// gap to the previous unit (at most `MAX_GAP`) after the previous unit's due time. A reader that
/// is late by up to `MAX_GAP` gets the due units at once, stamped with the moments they were due,
/// as a live camera's buffered stream would deliver them; later than that, the schedule restarts
/// from now (what a camera's overflowing buffer would lose). So a capture thread held up now and
/// then (both cores busy) shows as latency, not as a camera that slows down.
/// A looped file goes on one frame interval (the last gap seen) after its last unit.
#[derive(Debug, Default)]
struct Pacer {
    /// The previous unit's timestamp and due time.
    last: Option<(f64, Instant)>,
    /// The last positive gap between two timestamps (seconds).
    period: f64,
    /// The file started again: the next unit comes `period` after the previous one.
    rewound: bool,
}

impl Pacer {
    /// When unit `ts` is due, seen from `now`.
    fn due(&mut self, ts: f64, now: Instant) -> Instant {
        let due = match self.last {
            Some((prev, at)) => {
                let gap = if std::mem::take(&mut self.rewound) {
                    self.period
                } else {
                    ts - prev
                };
                let gap = gap.clamp(0.0, MAX_GAP.as_secs_f64());
                if gap > 0.0 {
                    self.period = gap;
                }
                let due = at + Duration::from_secs_f64(gap);
                if now > due + MAX_GAP { now } else { due }
            }
            None => now,
        };
        self.last = Some((ts, due));
        due
    }

    /// The file starts again: its first unit is due one frame interval after its last.
    fn rewind(&mut self) {
        self.rewound = true;
    }
}

enum Units {
    Mp4(Mp4Units),
    Raw(RawUnits),
}

/// Why opening failed, before the camera id is attached.
enum OpenFailure {
    Open(String),
    Unsupported(String),
}

impl OpenFailure {
    fn naming(self, camera: &str) -> SourceError {
        let camera = camera.to_string();
        match self {
            Self::Open(reason) => SourceError::Open { camera, reason },
            Self::Unsupported(reason) => SourceError::Unsupported { camera, reason },
        }
    }
}

impl FileSource {
    /// Opens `path` for `camera`: checks the container and the codec, reads the sample table.
    pub fn open(camera: &CameraConfig, path: &Path) -> Result<Self, SourceError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let units = match ext.as_str() {
            "mp4" | "m4v" | "mov" => Mp4Units::open(path).map(Units::Mp4),
            "h264" | "264" => RawUnits::open(path).map(Units::Raw),
            other => Err(OpenFailure::Unsupported(format!(
                "file {} has extension {other:?}: expected .mp4, .m4v, .mov, .h264 or .264",
                path.display()
            ))),
        };
        Ok(Self {
            units: units.map_err(|f| f.naming(&camera.id))?,
            camera: camera.id.clone(),
            path: path.to_path_buf(),
            pace: camera.pace,
            pacer: Pacer::default(),
            last_us: 0,
        })
    }

    /// Sleeps until the unit stamped `ts` (seconds) is due (not at all with `pace = "fast"`);
    /// returns the wall-clock moment it was due (µs), read against one clock reading taken
    /// before any sleep, so a sleep that overshoots does not move the stamp.
    fn wait_for(&mut self, ts: f64) -> i64 {
        let now = Instant::now();
        let wall = now_us();
        if self.pace != Pace::Realtime {
            return wall;
        }
        let due = self.pacer.due(ts, now);
        let us = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        if due > now {
            std::thread::sleep(due - now);
            wall.saturating_add(us(due - now))
        } else {
            wall.saturating_sub(us(now - due))
        }
    }
}

impl FrameSource for FileSource {
    /// Takes the file again from its start, on the same schedule: its first unit is due one
    /// frame interval after its last (a looped clip plays like one long camera stream).
    fn rewind(&mut self) -> Result<bool, SourceError> {
        let units = match &self.units {
            Units::Mp4(_) => Mp4Units::open(&self.path).map(Units::Mp4),
            Units::Raw(_) => RawUnits::open(&self.path).map(Units::Raw),
        };
        self.units = units.map_err(|f| f.naming(&self.camera))?;
        self.pacer.rewind();
        Ok(true)
    }

    fn next_unit(&mut self) -> Result<Option<EncodedUnit>, SourceError> {
        let next = match &mut self.units {
            Units::Mp4(m) => m.next(),
            Units::Raw(r) => r.next(),
        };
        let (annexb, ts) = match next {
            Ok(Some(unit)) => unit,
            Ok(None) => return Ok(None),
            Err(reason) => {
                return Err(SourceError::Read {
                    camera: self.camera.clone(),
                    reason: format!("{}: {reason}", self.path.display()),
                });
            }
        };
        let capture_us = self.wait_for(ts).max(self.last_us + 1);
        self.last_us = capture_us;
        Ok(Some(EncodedUnit {
            annexb,
            capture_us,
            truth: vec![],
            source_size: (0, 0),
        }))
    }
}

/// One MP4 sample: where it is and when it is decoded.
#[derive(Debug, Clone, Copy)]
struct Sample {
    offset: u64,
    size: u32,
    dts: u64,
    sync: bool,
}

struct Mp4Units {
    file: File,
    file_len: u64,
    samples: Vec<Sample>,
    next: usize,
    length_size: usize,
    timescale: u32,
    /// SPS and PPS from avcC, Annex B framed.
    params: Vec<u8>,
}

impl Mp4Units {
    fn open(path: &Path) -> Result<Self, OpenFailure> {
        let shown = path.display();
        let open = |e: std::io::Error| OpenFailure::Open(format!("cannot read {shown}: {e}"));
        let file = File::open(path).map_err(open)?;
        let file_len = file.metadata().map_err(open)?.len();
        let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            mp4::Mp4Reader::read_header(BufReader::new(file), file_len)
        }));
        let mp4 = match parsed {
            Ok(Ok(mp4)) => mp4,
            Ok(Err(e)) => {
                return Err(OpenFailure::Open(format!(
                    "{shown} is not a readable MP4: {e}"
                )));
            }
            Err(_) => {
                return Err(OpenFailure::Open(format!(
                    "{shown} is not a readable MP4: corrupt boxes"
                )));
            }
        };
        let mut tracks: Vec<_> = mp4.tracks().values().collect();
        tracks.sort_by_key(|t| t.track_id());
        let is_video = |t: &&mp4::Mp4Track| matches!(t.track_type(), Ok(mp4::TrackType::Video));
        let Some(track) = tracks
            .iter()
            .copied()
            .find(|t| is_video(t) && t.trak.mdia.minf.stbl.stsd.avc1.is_some())
        else {
            let codec = video_codecs(path).into_iter().next();
            return Err(OpenFailure::Unsupported(match codec {
                Some(c) => format!("{shown}: codec {c} (only H.264 video, avc1, is supported)"),
                None if tracks.iter().any(is_video) => {
                    format!("{shown}: codec unknown (only H.264 video, avc1, is supported)")
                }
                None => format!("{shown} has no video track"),
            }));
        };
        let corrupt = |what: String| OpenFailure::Open(format!("{shown}: corrupt MP4: {what}"));
        let stbl = &track.trak.mdia.minf.stbl;
        let avcc = stbl
            .stsd
            .avc1
            .as_ref()
            .map(|a| &a.avcc)
            .ok_or_else(|| corrupt("no avcC".into()))?;
        let length_size = usize::from(avcc.length_size_minus_one & 3) + 1;
        if length_size == 3 {
            return Err(corrupt("avcC NAL length size 3".into()));
        }
        let mut params = Vec::new();
        for nal in avcc
            .sequence_parameter_sets
            .iter()
            .chain(&avcc.picture_parameter_sets)
        {
            params.extend_from_slice(&[0, 0, 0, 1]);
            params.extend_from_slice(&nal.bytes);
        }
        if avcc.sequence_parameter_sets.is_empty() || avcc.picture_parameter_sets.is_empty() {
            return Err(corrupt("avcC carries no SPS/PPS".into()));
        }
        let timescale = track.timescale();
        if timescale == 0 {
            return Err(corrupt("track timescale 0".into()));
        }
        let samples = sample_table(track, file_len).map_err(corrupt)?;
        if samples.is_empty() && mp4.is_fragmented() {
            return Err(OpenFailure::Unsupported(format!(
                "{shown}: fragmented MP4 (moof) is not supported"
            )));
        }
        let file = File::open(path).map_err(open)?;
        Ok(Self {
            file,
            file_len,
            samples,
            next: 0,
            length_size,
            timescale,
            params,
        })
    }

    fn next(&mut self) -> Result<Option<(Vec<u8>, f64)>, String> {
        let Some(s) = self.samples.get(self.next).copied() else {
            return Ok(None);
        };
        let n = self.next + 1;
        self.next = n;
        let end = s.offset.saturating_add(u64::from(s.size));
        if end > self.file_len {
            return Err(format!(
                "truncated file: sample {n} ends at byte {end}, the file has {}",
                self.file_len
            ));
        }
        let mut data = vec![0u8; s.size as usize];
        self.file
            .seek(SeekFrom::Start(s.offset))
            .and_then(|_| self.file.read_exact(&mut data))
            .map_err(|e| format!("sample {n}: {e}"))?;
        let mut out = Vec::with_capacity(data.len() + self.params.len() + 16);
        if s.sync {
            out.extend_from_slice(&self.params);
        }
        let mut rest = data.as_slice();
        while !rest.is_empty() {
            let (len, body) = rest
                .split_at_checked(self.length_size)
                .ok_or_else(|| format!("sample {n}: cut inside a NAL length"))?;
            let len = len
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            let (nal, tail) = body
                .split_at_checked(len)
                .ok_or_else(|| format!("sample {n}: NAL of {len} bytes overruns the sample"))?;
            if !nal.is_empty() {
                out.extend_from_slice(&[0, 0, 0, 1]);
                out.extend_from_slice(nal);
            }
            rest = tail;
        }
        Ok(Some((out, s.dts as f64 / f64::from(self.timescale))))
    }
}

/// Offsets, sizes, decode times and sync flags of every sample, checked for consistency.
fn sample_table(track: &mp4::Mp4Track, file_len: u64) -> Result<Vec<Sample>, String> {
    let stbl = &track.trak.mdia.minf.stbl;
    let count = stbl.stsz.sample_count as usize;
    if count as u64 > file_len {
        return Err(format!("{count} samples in a file of {file_len} bytes"));
    }
    let size_of = |i: usize| -> Result<u32, String> {
        let stsz = &stbl.stsz;
        let size = if stsz.sample_size > 0 {
            Some(stsz.sample_size)
        } else {
            stsz.sample_sizes.get(i).copied()
        };
        match size {
            Some(s) if (s as usize) <= MAX_UNIT => Ok(s),
            Some(s) => Err(format!("sample {} claims {s} bytes", i + 1)),
            None => Err(format!(
                "stsz lists {} sizes for {count} samples",
                stbl.stsz.sample_sizes.len()
            )),
        }
    };
    let chunks: Vec<u64> = match (&stbl.stco, &stbl.co64) {
        (Some(stco), _) => stco.entries.iter().map(|&o| u64::from(o)).collect(),
        (None, Some(co64)) => co64.entries.clone(),
        (None, None) => Vec::new(),
    };
    let mut samples = Vec::with_capacity(count);
    let runs = &stbl.stsc.entries;
    'runs: for (k, run) in runs.iter().enumerate() {
        let first = run.first_chunk as usize;
        let last = runs
            .get(k + 1)
            .map_or(chunks.len(), |r| (r.first_chunk as usize).saturating_sub(1))
            .min(chunks.len());
        if first == 0 {
            return Err("stsc chunk number 0".into());
        }
        for chunk in first..=last {
            let mut offset = chunks[chunk - 1];
            for _ in 0..run.samples_per_chunk {
                if samples.len() == count {
                    break 'runs;
                }
                let size = size_of(samples.len())?;
                samples.push(Sample {
                    offset,
                    size,
                    dts: 0,
                    sync: stbl.stss.is_none(),
                });
                offset = offset.saturating_add(u64::from(size));
            }
        }
    }
    if samples.len() != count {
        return Err(format!(
            "the chunk tables place {} of {count} samples",
            samples.len()
        ));
    }
    let (mut dts, mut delta, mut i) = (0u64, 0u64, 0usize);
    for run in &stbl.stts.entries {
        delta = u64::from(run.sample_delta);
        for _ in 0..run.sample_count {
            let Some(s) = samples.get_mut(i) else { break };
            s.dts = dts;
            dts = dts.saturating_add(delta);
            i += 1;
        }
    }
    for s in samples.iter_mut().skip(i) {
        s.dts = dts;
        dts = dts.saturating_add(delta);
    }
    for &n in stbl.stss.iter().flat_map(|stss| &stss.entries) {
        if let Some(s) = (n as usize).checked_sub(1).and_then(|i| samples.get_mut(i)) {
            s.sync = true;
        }
    }
    Ok(samples)
}

/// Sample entry types (`avc1`, `hev1`, `hvc1`, `av01`, …) of the video tracks, read straight from
/// the boxes (the `mp4` crate drops entries it does not know). Empty when unreadable.
fn video_codecs(path: &Path) -> Vec<String> {
    let Ok(mut file) = File::open(path) else {
        return vec![];
    };
    let mut pos = 0u64;
    let mut moov = None;
    while moov.is_none() {
        let mut head = [0u8; 16];
        if file
            .seek(SeekFrom::Start(pos))
            .and_then(|_| file.read_exact(&mut head[..8]))
            .is_err()
        {
            return vec![];
        }
        let mut size = u64::from(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
        let mut header = 8;
        if size == 1 && file.read_exact(&mut head[8..]).is_ok() {
            size = u64::from_be_bytes([
                head[8], head[9], head[10], head[11], head[12], head[13], head[14], head[15],
            ]);
            header = 16;
        }
        if size < header || (&head[4..8] == b"moov" && size > MAX_UNIT as u64) {
            return vec![];
        }
        if &head[4..8] == b"moov" {
            let mut body = vec![0u8; (size - header) as usize];
            if file.read_exact(&mut body).is_err() {
                return vec![];
            }
            moov = Some(body);
        }
        pos += size;
    }
    let moov = moov.unwrap_or_default();
    let mut out = Vec::new();
    for trak in children(&moov).filter(|(t, _)| t == b"trak") {
        let Some(mdia) = child(trak.1, b"mdia") else {
            continue;
        };
        if child(mdia, b"hdlr").and_then(|h| h.get(8..12)) != Some(b"vide") {
            continue;
        }
        let stsd = child(mdia, b"minf")
            .and_then(|m| child(m, b"stbl"))
            .and_then(|s| child(s, b"stsd"));
        if let Some(codec) = stsd.and_then(|s| s.get(12..16)) {
            out.push(String::from_utf8_lossy(codec).into_owned());
        }
    }
    out
}

/// The child boxes of a box body: (type, body).
fn children(data: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    let mut rest = data;
    std::iter::from_fn(move || {
        let size = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let kind: [u8; 4] = rest.get(4..8)?.try_into().ok()?;
        let body = rest.get(8..size.max(8))?;
        rest = &rest[size.max(8)..];
        Some((kind, body))
    })
}

fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    children(data).find(|(k, _)| k == kind).map(|(_, b)| b)
}

/// Raw Annex B H.264 read in chunks and grouped into access units.
struct RawUnits {
    reader: BufReader<File>,
    /// Unread bytes, starting at a start code once the first one was found.
    buf: Vec<u8>,
    eof: bool,
    /// The NAL unit that began the next access unit.
    pending: Option<Vec<u8>>,
    index: u64,
    fps: f64,
}

impl RawUnits {
    fn open(path: &Path) -> Result<Self, OpenFailure> {
        let shown = path.display();
        let file =
            File::open(path).map_err(|e| OpenFailure::Open(format!("cannot read {shown}: {e}")))?;
        let mut raw = Self {
            reader: BufReader::new(file),
            buf: Vec::new(),
            eof: false,
            pending: None,
            index: 0,
            fps: 25.0,
        };
        // The first NAL unit must be there: rejects empty files and files that are not Annex B.
        match raw.next_nal() {
            Ok(Some(nal)) => raw.pending = Some(nal),
            Ok(None) => {
                return Err(OpenFailure::Open(format!(
                    "{shown} holds no H.264 NAL units (no 00 00 01 start code)"
                )));
            }
            Err(e) => return Err(OpenFailure::Open(format!("{shown}: {e}"))),
        }
        Ok(raw)
    }

    /// Reads more of the file into `buf`; false at the end.
    fn fill(&mut self) -> Result<bool, String> {
        if self.eof {
            return Ok(false);
        }
        let mut chunk = [0u8; 64 << 10];
        let n = self.reader.read(&mut chunk).map_err(|e| e.to_string())?;
        self.buf.extend_from_slice(&chunk[..n]);
        self.eof = n == 0;
        Ok(n > 0)
    }

    /// The next NAL unit (header byte first, no start code), or `None` at the end.
    fn next_nal(&mut self) -> Result<Option<Vec<u8>>, String> {
        loop {
            // Skip to the first start code (and anything before it).
            let Some(sc) = find_start(&self.buf, 0) else {
                let keep = self.buf.len().min(2);
                self.buf.drain(..self.buf.len() - keep);
                if !self.fill()? {
                    return Ok(None);
                }
                continue;
            };
            let mut scan = sc + 3;
            let end = loop {
                if let Some(next) = find_start(&self.buf, scan) {
                    break next;
                }
                if self.buf.len() - sc > MAX_UNIT {
                    return Err(format!("a NAL unit longer than {MAX_UNIT} bytes"));
                }
                scan = self.buf.len().saturating_sub(2).max(sc + 3);
                if !self.fill()? {
                    break self.buf.len();
                }
            };
            let mut nal = self.buf[sc + 3..end].to_vec();
            self.buf.drain(..end);
            while nal.last() == Some(&0) {
                nal.pop(); // trailing_zero_8bits / the leading zero of a 4-byte start code
            }
            if !nal.is_empty() {
                return Ok(Some(nal));
            }
        }
    }

    /// The next access unit and its timestamp (index / fps).
    fn next(&mut self) -> Result<Option<(Vec<u8>, f64)>, String> {
        let mut au = Vec::new();
        let mut has_vcl = false;
        loop {
            let nal = match self.pending.take() {
                Some(nal) => nal,
                None => match self.next_nal()? {
                    Some(nal) => nal,
                    None => break,
                },
            };
            let kind = nal[0] & 0x1f;
            let new_picture =
                matches!(kind, 1 | 2 | 5) && slice_start(&nal).is_some_and(|(mb, _)| mb == 0);
            if has_vcl && (matches!(kind, 6..=9 | 14..=18) || new_picture) {
                self.pending = Some(nal);
                break;
            }
            if kind == 7
                && let Some(fps) = SpsInfo::parse(&nal).and_then(|s| s.fps)
            {
                self.fps = fps;
            }
            has_vcl |= matches!(kind, 1..=5);
            au.extend_from_slice(&[0, 0, 0, 1]);
            au.extend_from_slice(&nal);
        }
        if au.is_empty() {
            return Ok(None);
        }
        let ts = self.index as f64 / self.fps;
        self.index += 1;
        Ok(Some((au, ts)))
    }
}

/// Position of the next `00 00 01` at or after `from`.
fn find_start(data: &[u8], from: usize) -> Option<usize> {
    data.get(from..)?
        .windows(3)
        .position(|w| w == [0, 0, 1])
        .map(|p| p + from)
}

#[cfg(test)]
pub(crate) mod clips;

#[cfg(test)]
mod tests;
