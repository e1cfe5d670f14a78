//! RTSP cameras (`rtsp://…`) through `retina`: one [`RtspSource`] per connection, turning the
//! camera's first H.264 video stream into one Annex B access unit per call (SPS/PPS before each
//! keyframe, retina's `FrameFormat::SIMPLE`).
//!
//! `DefaultOpener` opens it for `rtsp://` cameras on the camera's capture thread (a plain OS
//! thread, `actors::source`), which then calls [`FrameSource::next_unit`] in a loop. retina is
//! async: every source drives its futures with `block_on` on one small process-wide tokio runtime
//! (one IO worker). That runtime must outlive the sources: dropping a retina session spawns its
//! `TEARDOWN` in the background, and the per-URL [`SessionGroup`] only forgets the stale session
//! when that task finishes; `open` waits such sessions out (bounded) before connecting again, as
//! retina documents.
//! Credentials come from the URL's userinfo or the camera's `username`/`password` keys; they are
//! removed from the URL handed to retina (whose logs print it), and every message built here uses
//! redacted URLs and scrubs the camera's secrets.
//! Failures, each ending this source (the actor counts it by reason and reconnects with backoff):
//! DESCRIBE/SETUP/PLAY failing or not done within `stall_timeout` + 5 s → `SourceError::Open`; no
//! H.264 video stream → `Unsupported` naming the codec; no frame for `stall_timeout` → `Stalled`
//! (retina alone notices a hung server only after ~58 s); the stream ending (retina yields `None`
//! when the server closes or dies) → `Disconnected`; a retina error mid-stream → `Read`.

use super::source::{EncodedUnit, FrameSource, SourceError, now_us};
use crate::config::{CameraConfig, Transport};
use futures::StreamExt;
use retina::client::{
    Credentials, Demuxed, PlayOptions, Session, SessionGroup, SessionOptions, SetupOptions,
    TcpTransportOptions, TeardownPolicy, UdpTransportOptions,
};
use retina::codec::{CodecItem, FrameFormat};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// DESCRIBE + SETUP + PLAY may take this much longer than `stall_timeout`.
const OPEN_EXTRA: Duration = Duration::from_secs(5);
/// Longest wait for stale sessions of the same URL before connecting anyway. retina's single
/// `TEARDOWN` of a TCP session gives up after 5 s; UDP sessions are retried until they expire
/// (~60 s), longer than a camera should stay dark.
const STALE_WAIT_MAX: Duration = Duration::from_secs(5);

/// A playing RTSP session of one camera.
pub struct RtspSource {
    camera: String,
    secrets: Vec<String>,
    stall_timeout: Duration,
    /// `None` only while being dropped.
    stream: Option<Pin<Box<Demuxed>>>,
}

impl RtspSource {
    /// Connects, picks the first H.264 video stream, sets it up over the camera's transport and
    /// starts playing. Blocks (the caller is a capture thread, not an async task).
    pub fn open(camera: &CameraConfig, url: &url::Url) -> Result<Self, SourceError> {
        let id = camera.id.clone();
        let secrets = camera.secrets();
        let open_err = |reason: String| SourceError::Open {
            camera: id.clone(),
            reason: scrub(&reason, &secrets),
        };
        let (bare, creds) = split_credentials(camera, url);
        let shown = crate::redact::url(bare.as_str());
        let group = session_group(&bare);
        let options = SessionOptions::default()
            .creds(creds)
            .session_group(group.clone())
            .teardown(TeardownPolicy::Auto)
            .user_agent(format!("framewire/{}", env!("CARGO_PKG_VERSION")));
        let transport = match camera.transport {
            Transport::Tcp => retina::client::Transport::Tcp(TcpTransportOptions::default()),
            Transport::Udp => retina::client::Transport::Udp(UdpTransportOptions::default()),
        };
        let handshake = OPEN_EXTRA + camera.stall_timeout;
        let opened = block_on(async {
            let stale = group.stale_sessions();
            if stale.num_sessions > 0 {
                tracing::info!(camera = %id, url = %shown, sessions = stale.num_sessions,
                    "waiting for stale RTSP sessions to be torn down");
                let waited =
                    tokio::time::timeout(STALE_WAIT_MAX, group.await_stale_sessions(&stale));
                if waited.await.is_err() {
                    tracing::warn!(camera = %id, url = %shown,
                        "stale RTSP sessions still open after {STALE_WAIT_MAX:?}; connecting anyway");
                }
            }
            match tokio::time::timeout(handshake, start(&id, bare, options, transport)).await {
                Ok(r) => r,
                Err(_) => Err(Failure::Open(format!("no answer within {handshake:?}"))),
            }
        });
        let stream = match opened {
            Err(reason) => return Err(open_err(format!("{shown}: {reason}"))),
            Ok(Err(Failure::Open(reason))) => return Err(open_err(format!("{shown}: {reason}"))),
            Ok(Err(Failure::Unsupported(reason))) => {
                return Err(SourceError::Unsupported {
                    camera: id,
                    reason: scrub(&reason, &secrets),
                });
            }
            Ok(Ok(stream)) => stream,
        };
        tracing::info!(camera = %id, url = %shown, transport = ?camera.transport, "RTSP stream playing");
        Ok(Self {
            camera: id,
            secrets,
            stall_timeout: camera.stall_timeout,
            stream: Some(stream),
        })
    }
}

impl FrameSource for RtspSource {
    /// The next H.264 access unit. Never `Ok(None)`: a live stream that ends is a disconnect.
    fn next_unit(&mut self) -> Result<Option<EncodedUnit>, SourceError> {
        let camera = || self.camera.clone();
        let Some(stream) = self.stream.as_mut() else {
            return Err(SourceError::Disconnected { camera: camera() });
        };
        let stall = self.stall_timeout;
        let got = block_on(async {
            tokio::time::timeout(stall, async {
                loop {
                    match stream.next().await {
                        Some(Ok(CodecItem::VideoFrame(f))) => return Ok(Some(f.into_data())),
                        Some(Ok(_)) => continue, // RTCP, audio, metadata
                        Some(Err(e)) => return Err(e.to_string()),
                        None => return Ok(None),
                    }
                }
            })
            .await
        });
        match got {
            Err(reason) => Err(SourceError::Read {
                camera: camera(),
                reason: scrub(&reason, &self.secrets),
            }),
            Ok(Err(_elapsed)) => Err(SourceError::Stalled {
                camera: camera(),
                after: stall,
            }),
            Ok(Ok(Err(e))) => Err(SourceError::Read {
                camera: camera(),
                reason: scrub(&format!("RTSP stream error: {e}"), &self.secrets),
            }),
            Ok(Ok(Ok(None))) => Err(SourceError::Disconnected { camera: camera() }),
            Ok(Ok(Ok(Some(annexb)))) => Ok(Some(EncodedUnit {
                annexb,
                capture_us: now_us(),
                truth: vec![],
                source_size: (0, 0),
            })),
        }
    }
}

impl Drop for RtspSource {
    fn drop(&mut self) {
        // retina spawns the session's TEARDOWN onto the current runtime when it is dropped.
        if let Ok(rt) = runtime() {
            let _entered = rt.enter();
            drop(self.stream.take());
        }
    }
}

/// Why `start` failed (reasons not yet scrubbed).
enum Failure {
    Open(String),
    Unsupported(String),
}

/// DESCRIBE → pick the first H.264 video stream → SETUP → PLAY → demux.
async fn start(
    camera: &str,
    url: url::Url,
    options: SessionOptions,
    transport: retina::client::Transport,
) -> Result<Pin<Box<Demuxed>>, Failure> {
    let open = |step: &str, e: retina::Error| Failure::Open(format!("{step} failed: {e}"));
    let mut session = Session::describe(url, options)
        .await
        .map_err(|e| open("DESCRIBE", e))?;
    let videos: Vec<(usize, String)> = session
        .streams()
        .iter()
        .enumerate()
        .filter(|(_, s)| s.media() == "video")
        .map(|(i, s)| (i, s.encoding_name().to_ascii_lowercase()))
        .collect();
    let Some(&(index, _)) = videos.iter().find(|(_, enc)| enc == "h264") else {
        return Err(Failure::Unsupported(match videos.first() {
            Some((_, enc)) => format!("codec {enc} (only H.264 is supported)"),
            None => "no video stream (only H.264 video is supported)".into(),
        }));
    };
    let setup = SetupOptions::default()
        .transport(transport)
        .frame_format(FrameFormat::SIMPLE);
    session
        .setup(index, setup)
        .await
        .map_err(|e| open("SETUP", e))?;
    let playing = session
        .play(PlayOptions::default())
        .await
        .map_err(|e| open("PLAY", e))?;
    let demuxed = playing.demuxed().map_err(|e| open("demux", e))?;
    tracing::debug!(camera, stream = index, "RTSP H.264 stream set up");
    Ok(Box::pin(demuxed))
}

/// The URL without userinfo, and the credentials: the URL's own, else the camera's keys.
fn split_credentials(camera: &CameraConfig, url: &url::Url) -> (url::Url, Option<Credentials>) {
    let mut bare = url.clone();
    let _ = bare.set_username("");
    let _ = bare.set_password(None);
    let user = Some(percent_decode(url.username()))
        .filter(|u| !u.is_empty())
        .or_else(|| camera.username.clone().filter(|u| !u.is_empty()));
    let password = url
        .password()
        .map(percent_decode)
        .or_else(|| camera.password.clone());
    let creds = match (user, password) {
        (None, None) => None,
        (u, p) => Some(Credentials {
            username: u.unwrap_or_default(),
            password: p.unwrap_or_default(),
        }),
    };
    (bare, creds)
}

/// Decodes `%XX` escapes of a URL's userinfo (invalid escapes are kept as they are).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Removes the camera's secrets from a message (its URLs are redacted already; retina never sees
/// credentials in a URL) and puts it on one line.
fn scrub(text: &str, secrets: &[String]) -> String {
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let one_line: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    crate::redact::secrets(&one_line.join("; "), &refs)
}

/// One session group per URL (without credentials), shared by every connection to it.
fn session_group(bare: &url::Url) -> Arc<SessionGroup> {
    static GROUPS: OnceLock<Mutex<HashMap<String, Arc<SessionGroup>>>> = OnceLock::new();
    let mut groups = GROUPS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    groups
        .entry(bare.to_string())
        .or_insert_with(|| Arc::new(SessionGroup::default().named(bare.to_string())))
        .clone()
}

/// The process-wide runtime of all RTSP connections (IO and timers on one worker thread; the
/// futures themselves are polled by the capture threads through `block_on`).
fn runtime() -> Result<&'static tokio::runtime::Runtime, String> {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("rtsp-io")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the RTSP runtime: {e}"))?;
    Ok(RUNTIME.get_or_init(|| rt))
}

/// Runs `fut` to completion on the RTSP runtime from a plain thread; refuses (instead of
/// panicking) inside an async context.
fn block_on<F: Future>(fut: F) -> Result<F::Output, String> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err("RTSP sources must be driven from a plain thread, not an async task".into());
    }
    Ok(runtime()?.block_on(fut))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ensures credentials leave the URL handed to retina, URL ones win, and keys fill in.
    #[test]
    fn credentials_are_split_from_the_url() {
        let mut cam = CameraConfig::synthetic("c", "rtsp://x");
        let u = url::Url::parse("rtsp://op:p%40ss@10.0.0.5:554/video").unwrap();
        let (bare, creds) = split_credentials(&cam, &u);
        assert_eq!(bare.as_str(), "rtsp://10.0.0.5:554/video");
        let c = creds.unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("op", "p@ss"));
        cam.username = Some("admin".into());
        cam.password = Some("k3y".into());
        let (_, creds) = split_credentials(&cam, &url::Url::parse("rtsp://h/v").unwrap());
        let c = creds.unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("admin", "k3y"));
        cam.username = None;
        cam.password = None;
        assert!(
            split_credentials(&cam, &url::Url::parse("rtsp://h/v").unwrap())
                .1
                .is_none()
        );
    }
}
