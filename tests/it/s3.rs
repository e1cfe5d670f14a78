//! S3 storage against s3s-fs, a real S3 protocol server that checks request signatures, started
//! by the test as its own process.

use crate::common::*;
use framewire::config::StorageKind;
use framewire::daemon::{self, Options};
use framewire::storage::ObjectStore;
use framewire::storage::results::BatchResults;
use framewire::storage::s3::S3Storage;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const ACCESS: &str = "framewire-test";
pub const SECRET: &str = "s3cr3t-Kx81-never-logged";

/// A running s3s-fs over a temporary directory with one bucket, killed on drop. `stop` and
/// `start_again` take it down and bring it back on the same port and data (outage tests).
pub struct S3Server {
    child: Option<Child>,
    port: u16,
    pub endpoint: String,
    dir: tempfile::TempDir,
}

impl S3Server {
    pub fn start(bucket: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(bucket)).unwrap();
        let port = free_port();
        let mut s = Self {
            child: None,
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            dir,
        };
        s.start_again();
        s
    }

    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "s3s-fs is already running");
        let child = Command::new("s3s-fs")
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS, "--secret-key", SECRET])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("s3s-fs on PATH (scripts/test installs it: cargo install s3s-fs@0.14.1 --features binary --locked)");
        let addr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        wait_until("s3s-fs listening", Duration::from_secs(10), || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
        });
        self.child = Some(child);
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn storage(&self, cfg: &mut framewire::config::StorageConfig, bucket: &str) {
        cfg.kind = StorageKind::S3;
        cfg.bucket = bucket.into();
        cfg.region = "us-east-1".into();
        cfg.endpoint = self.endpoint.clone();
        cfg.force_path_style = true;
        cfg.access_key_id = ACCESS.into();
        cfg.secret_access_key = SECRET.into();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Ensures the pipeline writes every batch's annotated frames and results JSON to S3 under the
/// Hive-partitioned keys (with SSE requested), and that the results read back through the S3 API
/// are whole. (s3s-fs 0.14 accepts the SSE header but does not store it, so it is not read back.)
#[test]
fn pipeline_stores_to_s3() {
    let s3 = S3Server::start("frames");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), vec![camera("cam-1", 1, (320, 240), 10.0)], 10);
    s3.storage(&mut cfg.storage, "frames");
    cfg.storage.prefix = "site-a".into();
    cfg.storage.sse = "AES256".into();
    let storage = cfg.storage.clone();
    let d = daemon::start(Options::new(cfg)).expect("daemon starts");
    let m = d.metrics.clone();
    wait_until("4 batches stored in S3", Duration::from_secs(60), || {
        framewire::metrics::total(&m.batches_stored) >= 4
    });
    let (_, status) = get(d.http, "/status");
    assert!(d.shutdown());
    assert!(!status.contains(SECRET), "no secret in /status");

    let store = S3Storage::new(&storage);
    let keys = store.list("site-a/results/camera=cam-1/").unwrap();
    let produced = framewire::metrics::total(&m.batches_produced) as usize;
    assert_eq!(
        keys.len(),
        produced,
        "one results object per batch: {keys:?}"
    );
    let mut full = 0;
    for key in &keys {
        assert!(
            key.contains("/date=") && key.contains("/hour=") && key.ends_with(".json"),
            "{key}"
        );
        let bytes = store.get(key).unwrap();
        assert_results_schema(&bytes, key);
        let doc: BatchResults = serde_json::from_slice(&bytes).unwrap();
        // Full batches, and the partial one flushed at shutdown.
        assert!(
            (1..=10).contains(&doc.frames.len()),
            "{key}: {} frames",
            doc.frames.len()
        );
        full += usize::from(doc.frames.len() == 10);
        let info = store.head(key).unwrap();
        assert_eq!(info.content_type.as_deref(), Some("application/json"));
        for f in &doc.frames {
            let jpeg = store.get(&f.annotated_key).unwrap();
            assert_eq!(&jpeg[..2], &[0xff, 0xd8], "{} is a JPEG", f.annotated_key);
            let info = store.head(&f.annotated_key).unwrap();
            assert_eq!(info.size as usize, jpeg.len());
        }
    }
    assert!(full >= 4, "{full} full batches");
}

/// Ensures a wrong secret is refused by the server (the signature is checked), the error names
/// bucket and key, and the secret appears nowhere in it; a missing key is `NotFound`.
#[test]
fn s3_errors_name_the_key_and_hide_the_secret() {
    let s3 = S3Server::start("bkt");
    let mut cfg = framewire::config::StorageConfig::default();
    s3.storage(&mut cfg, "bkt");
    let good = S3Storage::new(&cfg);
    good.put("x/1.json", b"{}", "application/json").unwrap();
    assert_eq!(good.get("x/1.json").unwrap(), b"{}");
    assert!(matches!(
        good.get("x/none.json"),
        Err(framewire::storage::StorageError::NotFound { .. })
    ));
    // s3s-fs 0.14 answers InvalidStorageClass to any storage class: the setting reaches the server.
    let mut c3 = cfg.clone();
    c3.storage_class = "STANDARD_IA".into();
    let e = S3Storage::new(&c3)
        .put("x/4.json", b"{}", "application/json")
        .unwrap_err();
    assert!(e.to_string().contains("InvalidStorageClass"), "{e}");
    cfg.secret_access_key = "wrong-secret-Zq7".into();
    let bad = S3Storage::new(&cfg);
    let e = bad
        .put("x/2.json", b"{}", "application/json")
        .unwrap_err()
        .to_string();
    assert!(e.contains("s3://bkt/x/2.json"), "{e}");
    assert!(
        !e.contains("wrong-secret-Zq7") && !e.contains(SECRET),
        "{e}"
    );
}

/// moto's S3 server (Python, from PyPI), which keeps what s3s-fs 0.14 does not: the encryption
/// and storage class of each object, answered in HeadObject. Killed on drop.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn start(bucket: &str) -> Self {
        let exe = std::env::var("FRAMEWIRE_MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let port = free_port();
        let child = Command::new(&exe)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{exe}: {e} (scripts/test installs moto[server] in a venv and sets FRAMEWIRE_MOTO_SERVER)")
            });
        let endpoint = format!("http://127.0.0.1:{port}");
        wait_until("moto listening", Duration::from_secs(30), || {
            ureq::put(&format!("{endpoint}/{bucket}")).call().is_ok()
        });
        Self { child, endpoint }
    }

    fn storage(&self, bucket: &str) -> framewire::config::StorageConfig {
        let mut cfg = framewire::config::StorageConfig {
            kind: StorageKind::S3,
            bucket: bucket.into(),
            region: "us-east-1".into(),
            endpoint: self.endpoint.clone(),
            force_path_style: true,
            ..Default::default()
        };
        cfg.access_key_id = ACCESS.into();
        cfg.secret_access_key = SECRET.into();
        cfg
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// 11 MiB that differ everywhere (a multipart upload of three parts at 5 MiB).
fn big_object() -> Vec<u8> {
    (0..11 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

/// Ensures every object carries the configured server-side encryption, KMS key and storage class
/// as the server stores them (HeadObject), for single puts, concurrent batch puts and multipart
/// uploads alike; and that a multipart object reads back whole.
#[test]
fn sse_and_storage_class_read_back_through_the_server() {
    let moto = Moto::start("enc");
    let key_arn = "arn:aws:kms:us-east-1:123456789012:key/framewire-test";
    let mut cfg = moto.storage("enc");
    cfg.sse = "aws:kms".into();
    cfg.kms_key_id = key_arn.into();
    cfg.storage_class = "STANDARD_IA".into();
    cfg.multipart_threshold = 5 * 1024 * 1024;
    cfg.part_size = 5 * 1024 * 1024;
    let store = S3Storage::new(&cfg);
    store.put("k/one.json", b"{}", "application/json").unwrap();
    store
        .put_all(
            (0..5)
                .map(|i| {
                    (
                        format!("k/frame-{i}.jpg"),
                        vec![i as u8; 1000],
                        "image/jpeg",
                    )
                })
                .collect(),
        )
        .unwrap();
    let big = big_object();
    store
        .put("k/big.bin", &big, "application/octet-stream")
        .unwrap();
    let mut keys = vec!["k/one.json".to_string(), "k/big.bin".to_string()];
    keys.extend((0..5).map(|i| format!("k/frame-{i}.jpg")));
    for k in &keys {
        let info = store.head(k).unwrap();
        assert_eq!(info.sse.as_deref(), Some("aws:kms"), "{k}");
        assert_eq!(info.kms_key_id.as_deref(), Some(key_arn), "{k}");
        assert_eq!(info.storage_class.as_deref(), Some("STANDARD_IA"), "{k}");
    }
    assert_eq!(store.head("k/big.bin").unwrap().size as usize, big.len());
    assert!(
        store.get("k/big.bin").unwrap() == big,
        "multipart object reads back whole"
    );

    let mut aes = moto.storage("enc");
    aes.sse = "AES256".into();
    aes.storage_class = "GLACIER_IR".into();
    let store = S3Storage::new(&aes);
    store.put("k/aes.json", b"{}", "application/json").unwrap();
    let info = store.head("k/aes.json").unwrap();
    assert_eq!(info.sse.as_deref(), Some("AES256"));
    assert_eq!(info.kms_key_id, None);
    assert_eq!(info.storage_class.as_deref(), Some("GLACIER_IR"));
}

/// Ensures a multipart upload goes through s3s-fs (which checks every part's signature) and reads
/// back whole, and concurrent batch puts all land.
#[test]
fn multipart_and_concurrent_puts_against_s3s_fs() {
    let s3 = S3Server::start("mpart");
    let mut cfg = framewire::config::StorageConfig::default();
    s3.storage(&mut cfg, "mpart");
    cfg.multipart_threshold = 5 * 1024 * 1024;
    cfg.part_size = 5 * 1024 * 1024;
    cfg.upload_concurrency = 3;
    let store = S3Storage::new(&cfg);
    let big = big_object();
    store
        .put("m/big.bin", &big, "application/octet-stream")
        .unwrap();
    assert!(store.get("m/big.bin").unwrap() == big);
    store
        .put_all(
            (0..12)
                .map(|i| {
                    (
                        format!("m/f{i:02}.jpg"),
                        vec![i as u8; 2000 + i],
                        "image/jpeg",
                    )
                })
                .collect(),
        )
        .unwrap();
    let listed = store.list("m/f").unwrap();
    assert_eq!(listed.len(), 12, "{listed:?}");
    for i in 0..12usize {
        assert_eq!(
            store.get(&format!("m/f{i:02}.jpg")).unwrap(),
            vec![i as u8; 2000 + i]
        );
    }
}
