//! `storage.kind = "s3"`: objects in an S3 bucket (or any S3-compatible store through `endpoint` and
//! `force_path_style`), with aws-sdk-s3. Credentials: static keys from `[storage]` (use `${VAR}`),
//! else the AWS default chain (environment, profile, IMDSv2 instance role). Every put carries the
//! configured server-side encryption (`sse`, `kms_key_id`) and `storage_class`.
//!
//! The `ObjectStore` trait is blocking (callers run it on the blocking pool), the SDK is async: the
//! store owns a small tokio runtime that runs the requests, and a blocking call waits for its
//! request there. It lives as long as the process side; dropping it shuts the runtime down in the
//! background. Objects above `multipart_threshold` go up as multipart uploads (`part_size` parts;
//! a failed upload is aborted so no parts linger); a batch's frames are written concurrently, at
//! most `upload_concurrency` requests at once (`put_all`). The SDK retries each request (standard mode); a failure that outlasts that is
//! returned as `StorageError::Remote` naming the bucket and key, and the caller retries it with
//! backoff (nothing is committed before it is durable). Credentials never appear in errors.

use super::{ObjectStore, StorageError};
use crate::config::StorageConfig;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, ServerSideEncryption, StorageClass,
};
use futures::StreamExt;
use std::future::Future;

pub struct S3Storage {
    /// The client and bucket, with the write options.
    target: Target,
    concurrency: usize,
    rt: Option<tokio::runtime::Runtime>,
    shown: String,
}

/// Sets the configured encryption and storage class on a PutObject or CreateMultipartUpload
/// request (the two builders share these setters but no trait).
macro_rules! object_options {
    ($req:expr, $t:expr) => {{
        let mut r = $req;
        if let Some(sse) = &$t.sse {
            r = r.server_side_encryption(sse.clone());
        }
        if let Some(k) = &$t.kms_key_id {
            r = r.ssekms_key_id(k);
        }
        if let Some(c) = &$t.storage_class {
            r = r.storage_class(c.clone());
        }
        r
    }};
}

/// Where and how objects are written; cloned into each request's task.
#[derive(Clone)]
struct Target {
    client: aws_sdk_s3::Client,
    bucket: String,
    sse: Option<ServerSideEncryption>,
    kms_key_id: Option<String>,
    storage_class: Option<StorageClass>,
    multipart_threshold: usize,
    part_size: usize,
}

impl Target {
    /// Writes one object: a single PutObject, or a multipart upload above the threshold. The
    /// error is one line (`brief`).
    async fn upload(self, key: String, bytes: Vec<u8>, content_type: String) -> Result<(), String> {
        if bytes.len() > self.multipart_threshold {
            return self.multipart(key, bytes, content_type).await;
        }
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type(content_type)
            .body(ByteStream::from(bytes));
        object_options!(req, self)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| brief(&e))
    }

    async fn multipart(
        &self,
        key: String,
        bytes: Vec<u8>,
        content_type: String,
    ) -> Result<(), String> {
        let req = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&key)
            .content_type(content_type);
        let made = object_options!(req, self)
            .send()
            .await
            .map_err(|e| brief(&e))?;
        let id = made
            .upload_id()
            .ok_or("CreateMultipartUpload answered without an upload id")?
            .to_string();
        let parts = async {
            let mut done = Vec::new();
            for (i, chunk) in bytes.chunks(self.part_size).enumerate() {
                let n = i as i32 + 1;
                let r = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(&key)
                    .upload_id(&id)
                    .part_number(n)
                    .body(ByteStream::from(chunk.to_vec()))
                    .send()
                    .await
                    .map_err(|e| format!("part {n}: {}", brief(&e)))?;
                done.push(
                    CompletedPart::builder()
                        .part_number(n)
                        .set_e_tag(r.e_tag().map(String::from))
                        .build(),
                );
            }
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(&key)
                .upload_id(&id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(done))
                        .build(),
                )
                .send()
                .await
                .map(|_| ())
                .map_err(|e| brief(&e))
        }
        .await;
        if parts.is_err() {
            // Best effort: a lingering upload only costs storage until a lifecycle rule clears it.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&key)
                .upload_id(&id)
                .send()
                .await;
        }
        parts
    }
}

/// What the server says about a stored object (for checks and tests).
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectInfo {
    pub size: i64,
    pub content_type: Option<String>,
    pub sse: Option<String>,
    pub kms_key_id: Option<String>,
    pub storage_class: Option<String>,
}

impl S3Storage {
    /// Builds the client; makes no request (credentials and region resolve lazily, except a
    /// missing `region`, which the default chain looks up once).
    pub fn new(cfg: &StorageConfig) -> Self {
        // Only fails when the OS cannot start two threads: nothing could run then anyway.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("framewire-s3")
            .enable_all()
            .build()
            .expect("the OS starts the S3 client's two threads");
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if !cfg.region.is_empty() {
            loader = loader.region(aws_config::Region::new(cfg.region.clone()));
        }
        if !cfg.access_key_id.is_empty() {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                cfg.access_key_id.clone(),
                cfg.secret_access_key.clone(),
                None,
                None,
                "framewire-config",
            ));
        }
        let shared = wait(&rt, async move { loader.load().await });
        let mut b =
            aws_sdk_s3::config::Builder::from(&shared).force_path_style(cfg.force_path_style);
        if !cfg.endpoint.is_empty() {
            b = b.endpoint_url(cfg.endpoint.clone());
        }
        let client = aws_sdk_s3::Client::from_conf(b.build());
        let shown = format!(
            "s3://{}/{} ({})",
            cfg.bucket,
            cfg.prefix,
            if cfg.endpoint.is_empty() {
                "AWS".to_string()
            } else {
                crate::redact::url(&cfg.endpoint)
            }
        );
        Self {
            target: Target {
                client,
                bucket: cfg.bucket.clone(),
                sse: (!cfg.sse.is_empty()).then(|| ServerSideEncryption::from(cfg.sse.as_str())),
                kms_key_id: (!cfg.kms_key_id.is_empty()).then(|| cfg.kms_key_id.clone()),
                storage_class: (!cfg.storage_class.is_empty())
                    .then(|| StorageClass::from(cfg.storage_class.as_str())),
                multipart_threshold: cfg.multipart_threshold,
                part_size: cfg.part_size.max(5 * 1024 * 1024),
            },
            concurrency: cfg.upload_concurrency.max(1),
            rt: Some(rt),
            shown,
        }
    }

    fn run<T: Send + 'static>(&self, f: impl Future<Output = T> + Send + 'static) -> T {
        wait(
            self.rt
                .as_ref()
                .expect("runtime lives as long as the store"),
            f,
        )
    }

    /// The server's view of an object: size, content type, encryption and storage class.
    pub fn head(&self, key: &str) -> Result<ObjectInfo, StorageError> {
        let req = self
            .target
            .client
            .head_object()
            .bucket(&self.target.bucket)
            .key(key);
        let r = self.run(async move { req.send().await });
        let o = r.map_err(|e| self.remote("reading", key, brief(&e)))?;
        Ok(ObjectInfo {
            size: o.content_length().unwrap_or(-1),
            content_type: o.content_type().map(String::from),
            sse: o.server_side_encryption().map(|s| s.as_str().to_string()),
            kms_key_id: o.ssekms_key_id().map(String::from),
            storage_class: o.storage_class().map(|s| s.as_str().to_string()),
        })
    }

    /// Every key under `prefix` (ListObjectsV2, all pages).
    pub fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let pages = self
            .target
            .client
            .list_objects_v2()
            .bucket(&self.target.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let r = self.run(async move {
            let mut pages = pages;
            let mut keys = Vec::new();
            while let Some(page) = pages.next().await {
                for o in page?.contents() {
                    keys.extend(o.key().map(String::from));
                }
            }
            Ok::<_, aws_sdk_s3::error::SdkError<_>>(keys)
        });
        r.map_err(|e| self.remote("listing", prefix, brief(&e)))
    }

    fn remote(&self, op: &'static str, key: &str, e: impl std::fmt::Display) -> StorageError {
        StorageError::Remote {
            op,
            key: format!("s3://{}/{key}", self.target.bucket),
            message: e.to_string(),
        }
    }
}

/// An SDK error in one line: the HTTP status, S3's error code and message, or what failed on the
/// way (timeout, connection).
fn brief<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    e: &SdkError<E, R>,
) -> String {
    match e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            format!(
                "{} {}",
                err.code().unwrap_or("error"),
                err.message().unwrap_or("(no message)")
            )
        }
        other => DisplayErrorContext(other).to_string(),
    }
}

/// Runs `f` on `rt` and blocks this (non-async) thread until it is done.
fn wait<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    f: impl Future<Output = T> + Send + 'static,
) -> T {
    let task = rt.spawn(f);
    futures::executor::block_on(task).expect("S3 request task panicked")
}

impl ObjectStore for S3Storage {
    fn put(&self, key: &str, bytes: &[u8], content_type: &str) -> Result<(), StorageError> {
        let up =
            self.target
                .clone()
                .upload(key.to_string(), bytes.to_vec(), content_type.to_string());
        self.run(up).map_err(|e| self.remote("writing", key, e))
    }

    fn put_all(&self, objects: Vec<(String, Vec<u8>, &'static str)>) -> Result<(), StorageError> {
        let uploads: Vec<_> = objects
            .into_iter()
            .map(|(key, bytes, content_type)| {
                let t = self.target.clone();
                async move {
                    let r = t.upload(key.clone(), bytes, content_type.to_string()).await;
                    (key, r)
                }
            })
            .collect();
        let n = self.concurrency;
        let done = self.run(async move {
            futures::stream::iter(uploads)
                .buffer_unordered(n)
                .collect::<Vec<_>>()
                .await
        });
        let mut failed = done
            .into_iter()
            .filter_map(|(key, r)| r.err().map(|e| (key, e)));
        match failed.next() {
            None => Ok(()),
            Some((key, e)) => Err(self.remote("writing", &key, e)),
        }
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        let req = self
            .target
            .client
            .get_object()
            .bucket(&self.target.bucket)
            .key(key);
        let r = self.run(async move {
            match req.send().await {
                Ok(o) => o
                    .body
                    .collect()
                    .await
                    .map(|b| Ok(b.into_bytes().to_vec()))
                    .map_err(|e| e.to_string()),
                Err(e) => Ok(Err(Box::new(e))),
            }
        });
        match r {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(e)) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                Err(StorageError::NotFound {
                    key: format!("s3://{}/{key}", self.target.bucket),
                })
            }
            Ok(Err(e)) => Err(self.remote("reading", key, brief(&e))),
            Err(e) => Err(self.remote("reading", key, e)),
        }
    }

    fn describe(&self) -> String {
        self.shown.clone()
    }
}

impl Drop for S3Storage {
    fn drop(&mut self) {
        // May be dropped on an async thread, where a blocking runtime shutdown would panic.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
