//! libjpeg-turbo's TurboJPEG API, loaded at run time: the fast JPEG codec when the machine has it.
//!
//! It owns the loaded library ([`TurboJpeg::get`], once per process, never unloaded) and one
//! compressor and one decompressor handle per thread (TurboJPEG handles are not thread-safe, and
//! creating one per call costs more than a small frame's encode). `media::jpeg` calls it through
//! [`crate::media::jpeg::Codec`]; nothing else does.
//!
//! Why loaded, not linked: the default build must need no system library (a fresh machine has no
//! libjpeg-turbo headers, and `turbojpeg-sys` 1.x wants libjpeg-turbo ≥ 3.0, which Debian 12 lacks),
//! and one binary should run on a host with or without it. `libturbojpeg.so.0` is the stable
//! TurboJPEG 2 ABI, also exported by libjpeg-turbo 3.x; the functions used here exist since 1.4.
//! Debian's `libturbojpeg0` and Amazon Linux's `turbojpeg` package install it (700 kB).
//!
//! Failures are [`JpegError`]s carrying TurboJPEG's own message: a corrupt JPEG is
//! `JpegError::Decode`, never a crash (TurboJPEG catches libjpeg's errors with setjmp inside the
//! C library). Decoding checks the header's size against [`MAX_DIMENSION`] before allocating, and
//! limits progressive scans (`TJFLAG_LIMITSCANS`), so a hostile JPEG cannot take unbounded memory
//! or time. Warnings (for example a truncated scan) keep the pixels decoded so far, like libjpeg.

use super::jpeg::{JpegError, MAX_DIMENSION};
use super::planes::{DECODED, Planes};
use std::cell::RefCell;
use std::ffi::{CStr, c_char, c_int, c_uchar, c_ulong, c_void};
use std::sync::OnceLock;

/// The soname of the TurboJPEG 2 ABI, found by the dynamic loader's usual search.
pub const LIBRARY: &str = "libturbojpeg.so.0";

/// Environment variable naming another library file (e.g. a libjpeg-turbo built under /opt);
/// read once, at first use.
pub const LIBRARY_ENV: &str = "FRAMEWIRE_TURBOJPEG";

type Handle = *mut c_void;
const TJSAMP_420: c_int = 2;
const TJPF_RGB: c_int = 0;
const TJFLAG_NOREALLOC: c_int = 1024;
const TJFLAG_LIMITSCANS: c_int = 32768;
const TJERR_WARNING: c_int = 0;

/// The TurboJPEG functions framewire uses, resolved from the loaded library.
pub struct TurboJpeg {
    init_compress: unsafe extern "C" fn() -> Handle,
    init_decompress: unsafe extern "C" fn() -> Handle,
    destroy: unsafe extern "C" fn(Handle) -> c_int,
    buf_size: unsafe extern "C" fn(c_int, c_int, c_int) -> c_ulong,
    alloc: unsafe extern "C" fn(c_int) -> *mut c_uchar,
    free: unsafe extern "C" fn(*mut c_uchar),
    compress_from_yuv_planes: unsafe extern "C" fn(
        Handle,
        *const *const c_uchar,
        c_int,
        *const c_int,
        c_int,
        c_int,
        *mut *mut c_uchar,
        *mut c_ulong,
        c_int,
        c_int,
    ) -> c_int,
    compress2: unsafe extern "C" fn(
        Handle,
        *const c_uchar,
        c_int,
        c_int,
        c_int,
        c_int,
        *mut *mut c_uchar,
        *mut c_ulong,
        c_int,
        c_int,
        c_int,
    ) -> c_int,
    decompress_header3: unsafe extern "C" fn(
        Handle,
        *const c_uchar,
        c_ulong,
        *mut c_int,
        *mut c_int,
        *mut c_int,
        *mut c_int,
    ) -> c_int,
    decompress_to_yuv_planes: unsafe extern "C" fn(
        Handle,
        *const c_uchar,
        c_ulong,
        *mut *mut c_uchar,
        c_int,
        *mut c_int,
        c_int,
        c_int,
    ) -> c_int,
    decompress2: unsafe extern "C" fn(
        Handle,
        *const c_uchar,
        c_ulong,
        *mut c_uchar,
        c_int,
        c_int,
        c_int,
        c_int,
        c_int,
    ) -> c_int,
    error_str2: unsafe extern "C" fn(Handle) -> *mut c_char,
    error_code: unsafe extern "C" fn(Handle) -> c_int,
    /// Keeps the functions above valid; never dropped (the value lives in a static).
    _lib: libloading::Library,
}

// SAFETY: the struct holds plain C function pointers and the library handle; TurboJPEG's functions
// are safe to call from any thread as long as each *tjhandle* is used by one thread at a time,
// which the per-thread handles below guarantee.
unsafe impl Send for TurboJpeg {}
unsafe impl Sync for TurboJpeg {}

static LOADED: OnceLock<Result<TurboJpeg, String>> = OnceLock::new();

/// One thread's handle of one kind, with a reusable output buffer (compressors only); destroyed
/// when the thread ends, or as soon as a library call on it failed (`poisoned`): libjpeg-turbo
/// 2.1.5 crashes (SIGBUS, heap corruption) when a decompressor is reused after some corrupt
/// JPEGs, measured here with bit-flipped and truncated frames; a fresh handle per failure is
/// cheap and never crashed in 18,000 corrupt inputs.
struct ThreadHandle {
    lib: &'static TurboJpeg,
    handle: Handle,
    /// A `tjAlloc`ed buffer of `cap` bytes that compressions write into (`TJFLAG_NOREALLOC`).
    buf: *mut c_uchar,
    cap: c_ulong,
    /// A call returned an error or warning: drop this handle after the current call.
    poisoned: bool,
}

impl Drop for ThreadHandle {
    fn drop(&mut self) {
        // SAFETY: handle and buf came from this library's tjInit*/tjAlloc and are freed once.
        unsafe {
            if !self.buf.is_null() {
                (self.lib.free)(self.buf);
            }
            (self.lib.destroy)(self.handle);
        }
    }
}

thread_local! {
    static COMPRESSOR: RefCell<Option<ThreadHandle>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<ThreadHandle>> = const { RefCell::new(None) };
}

/// Resolves `name` from `lib` as a function pointer of type `T`.
///
/// # Safety
/// `T` must be the C signature of the symbol `name` in the TurboJPEG 2 API.
unsafe fn symbol<T: Copy>(lib: &libloading::Library, name: &str) -> Result<T, String> {
    let mut z = name.as_bytes().to_vec();
    z.push(0);
    // SAFETY: the caller promises `T` matches the symbol's C type.
    unsafe { lib.get::<T>(&z) }
        .map(|s| *s)
        .map_err(|e| format!("the TurboJPEG library has no {name} (older than 1.4?): {e}"))
}

impl TurboJpeg {
    /// The library, loaded on first use; `Err` says why it is not available (not installed,
    /// or too old).
    pub fn get() -> Result<&'static TurboJpeg, String> {
        LOADED
            .get_or_init(Self::load)
            .as_ref()
            .map_err(Clone::clone)
    }

    fn load() -> Result<TurboJpeg, String> {
        let path = std::env::var_os(LIBRARY_ENV).unwrap_or_else(|| LIBRARY.into());
        let shown = path.to_string_lossy().into_owned();
        // SAFETY: loading runs the library's initialisers; libturbojpeg has none with side
        // effects beyond its own state.
        let lib = unsafe { libloading::Library::new(&path) }.map_err(|e| {
            format!("{shown} not loadable ({e}); install libjpeg-turbo's TurboJPEG library (Debian: libturbojpeg0, Amazon Linux: turbojpeg) or point {LIBRARY_ENV} at it")
        })?;
        // SAFETY: each signature below is the TurboJPEG 2 API's (turbojpeg.h, libjpeg-turbo 1.4+).
        unsafe {
            Ok(TurboJpeg {
                init_compress: symbol(&lib, "tjInitCompress")?,
                init_decompress: symbol(&lib, "tjInitDecompress")?,
                destroy: symbol(&lib, "tjDestroy")?,
                buf_size: symbol(&lib, "tjBufSize")?,
                alloc: symbol(&lib, "tjAlloc")?,
                free: symbol(&lib, "tjFree")?,
                compress_from_yuv_planes: symbol(&lib, "tjCompressFromYUVPlanes")?,
                compress2: symbol(&lib, "tjCompress2")?,
                decompress_header3: symbol(&lib, "tjDecompressHeader3")?,
                decompress2: symbol(&lib, "tjDecompress2")?,
                decompress_to_yuv_planes: symbol(&lib, "tjDecompressToYUVPlanes")?,
                error_str2: symbol(&lib, "tjGetErrorStr2")?,
                error_code: symbol(&lib, "tjGetErrorCode")?,
                _lib: lib,
            })
        }
    }

    /// TurboJPEG's message for the last error on `handle`.
    fn error(&self, handle: Handle) -> String {
        // SAFETY: tjGetErrorStr2 returns a NUL-terminated string owned by the handle (or static).
        unsafe {
            let p = (self.error_str2)(handle);
            if p.is_null() {
                "unknown TurboJPEG error".into()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        }
    }

    /// Runs `f` with this thread's handle in `slot` (made by `init`); a handle that `f` leaves
    /// poisoned, or whose call failed, is destroyed afterwards.
    fn with_handle<R>(
        &'static self,
        slot: &'static std::thread::LocalKey<RefCell<Option<ThreadHandle>>>,
        init: unsafe extern "C" fn() -> Handle,
        f: impl FnOnce(&mut ThreadHandle) -> Result<R, JpegError>,
    ) -> Result<R, JpegError> {
        slot.with(|cell| {
            let mut slot = cell.borrow_mut();
            let th = match slot.as_mut() {
                Some(th) => th,
                None => {
                    // SAFETY: plain constructor; null means failure.
                    let handle = unsafe { init() };
                    if handle.is_null() {
                        return Err(JpegError::Encode("TurboJPEG handle not created".into()));
                    }
                    slot.insert(ThreadHandle {
                        lib: self,
                        handle,
                        buf: std::ptr::null_mut(),
                        cap: 0,
                        poisoned: false,
                    })
                }
            };
            let result = f(th);
            if result.is_err() || th.poisoned {
                *slot = None;
            }
            result
        })
    }

    /// Runs `f` with this thread's compressor, whose buffer holds at least `need` bytes.
    fn with_compressor<R>(
        &'static self,
        need: c_ulong,
        f: impl FnOnce(&mut ThreadHandle) -> Result<R, JpegError>,
    ) -> Result<R, JpegError> {
        self.with_handle(&COMPRESSOR, self.init_compress, |th| {
            if th.cap < need {
                let size = c_int::try_from(need).map_err(|_| {
                    JpegError::Input(format!("{need} bytes of JPEG buffer is too large"))
                })?;
                // SAFETY: buf is ours (tjAlloc) or null; replaced by a fresh tjAlloc.
                unsafe {
                    if !th.buf.is_null() {
                        (self.free)(th.buf);
                    }
                    th.buf = (self.alloc)(size);
                }
                th.cap = if th.buf.is_null() { 0 } else { need };
                if th.buf.is_null() {
                    return Err(JpegError::Encode(format!("tjAlloc({need}) failed")));
                }
            }
            f(th)
        })
    }

    /// Worst-case JPEG size for `width` x `height` at 4:2:0.
    fn worst_case(&self, width: u32, height: u32) -> Result<c_ulong, JpegError> {
        // SAFETY: pure arithmetic in the library; returns (unsigned long)-1 on bad arguments.
        let n = unsafe { (self.buf_size)(width as c_int, height as c_int, TJSAMP_420) };
        if n == 0 || n == c_ulong::MAX {
            return Err(JpegError::Input(format!(
                "no JPEG size for {width}x{height}"
            )));
        }
        Ok(n)
    }

    /// Finishes a compression: the bytes written into the thread's buffer, copied out.
    fn compressed(
        &self,
        th: &mut ThreadHandle,
        rc: c_int,
        size: c_ulong,
    ) -> Result<Vec<u8>, JpegError> {
        th.poisoned |= rc != 0;
        if rc != 0 {
            return Err(JpegError::Encode(self.error(th.handle)));
        }
        if size > th.cap {
            return Err(JpegError::Encode(format!(
                "TurboJPEG wrote {size} bytes into a {}-byte buffer",
                th.cap
            )));
        }
        // SAFETY: the library wrote `size` ≤ cap bytes into buf, which is ours.
        Ok(unsafe { std::slice::from_raw_parts(th.buf, size as usize) }.to_vec())
    }

    /// Encodes full-range (JFIF) Y, Cb, Cr planes at 4:2:0 — `y` is `width` x `height` with row
    /// stride `strides[0]`, `cb`/`cr` are half size with their strides — without any colour
    /// conversion or subsampling. Both sizes must be even: TurboJPEG's 4:2:0 luma plane is padded
    /// to even sizes (`tjPlaneWidth`), which a tight odd-sized plane is not.
    pub fn encode_yuv420(
        &'static self,
        planes: [&[u8]; 3],
        strides: [usize; 3],
        width: u32,
        height: u32,
        quality: u8,
    ) -> Result<Vec<u8>, JpegError> {
        if !width.is_multiple_of(2) || !height.is_multiple_of(2) {
            return Err(JpegError::Input(format!(
                "{width}x{height}: 4:2:0 planes must have an even width and height"
            )));
        }
        let (cw, ch) = (width as usize / 2, height as usize / 2);
        let rows = [height as usize, ch, ch];
        let widths = [width as usize, cw, cw];
        for i in 0..3 {
            let need = strides[i] * (rows[i] - 1) + widths[i];
            if strides[i] < widths[i] || planes[i].len() < need {
                return Err(JpegError::Input(format!(
                    "plane {i}: {} bytes with stride {} for {}x{}",
                    planes[i].len(),
                    strides[i],
                    widths[i],
                    rows[i]
                )));
            }
        }
        let need = self.worst_case(width, height)?;
        let ptrs = planes.map(<[u8]>::as_ptr);
        let st = strides.map(|s| s as c_int);
        self.with_compressor(need, |th| {
            let (mut buf, mut size) = (th.buf, th.cap);
            // SAFETY: the planes were checked to cover width x height at their strides; buf
            // holds `cap` ≥ tjBufSize bytes, and NOREALLOC keeps the library from replacing it.
            let rc = unsafe {
                (self.compress_from_yuv_planes)(
                    th.handle,
                    ptrs.as_ptr(),
                    width as c_int,
                    st.as_ptr(),
                    height as c_int,
                    TJSAMP_420,
                    &mut buf,
                    &mut size,
                    c_int::from(quality),
                    TJFLAG_NOREALLOC,
                )
            };
            self.compressed(th, rc, size)
        })
    }

    /// Encodes packed RGB8 (stride `width * 3`) at 4:2:0.
    pub fn encode_rgb(
        &'static self,
        width: u32,
        height: u32,
        rgb: &[u8],
        quality: u8,
    ) -> Result<Vec<u8>, JpegError> {
        if rgb.len() != width as usize * height as usize * 3 {
            return Err(JpegError::Input(format!(
                "{} RGB bytes for {width}x{height}",
                rgb.len()
            )));
        }
        let need = self.worst_case(width, height)?;
        self.with_compressor(need, |th| {
            let (mut buf, mut size) = (th.buf, th.cap);
            // SAFETY: rgb holds width x height x 3 bytes (checked); buf as in encode_yuv420.
            let rc = unsafe {
                (self.compress2)(
                    th.handle,
                    rgb.as_ptr(),
                    width as c_int,
                    (width * 3) as c_int,
                    height as c_int,
                    TJPF_RGB,
                    &mut buf,
                    &mut size,
                    TJSAMP_420,
                    c_int::from(quality),
                    TJFLAG_NOREALLOC,
                )
            };
            self.compressed(th, rc, size)
        })
    }

    /// Runs `f` with this thread's decompressor after reading `jpeg`'s header: `f` gets the
    /// handle, the size (checked against [`MAX_DIMENSION`]) and the chroma subsampling.
    fn with_header<R>(
        &'static self,
        jpeg: &[u8],
        f: impl FnOnce(&mut ThreadHandle, c_int, c_int, c_int) -> Result<R, JpegError>,
    ) -> Result<R, JpegError> {
        self.with_handle(&DECOMPRESSOR, self.init_decompress, |th| {
            let (mut w, mut h, mut subsamp, mut colorspace) = (0, 0, 0, 0);
            // SAFETY: reads at most jpeg.len() bytes; writes the four ints.
            let rc = unsafe {
                (self.decompress_header3)(
                    th.handle,
                    jpeg.as_ptr(),
                    jpeg.len() as c_ulong,
                    &mut w,
                    &mut h,
                    &mut subsamp,
                    &mut colorspace,
                )
            };
            if rc != 0 {
                return Err(JpegError::Decode(self.error(th.handle)));
            }
            if w <= 0 || h <= 0 || w as u32 > MAX_DIMENSION || h as u32 > MAX_DIMENSION {
                return Err(JpegError::Decode(format!(
                    "{w}x{h} is outside 1x1 ..= {MAX_DIMENSION}x{MAX_DIMENSION}"
                )));
            }
            f(th, w, h, subsamp)
        })
    }

    /// A decode call's outcome: warnings (e.g. a truncated scan) keep what was decoded; either
    /// way the handle is not reused.
    fn decoded(&self, th: &mut ThreadHandle, rc: c_int) -> Result<(), JpegError> {
        th.poisoned |= rc != 0;
        // SAFETY: plain getter on our handle.
        if rc != 0 && unsafe { (self.error_code)(th.handle) } != TJERR_WARNING {
            return Err(JpegError::Decode(self.error(th.handle)));
        }
        Ok(())
    }

    /// Decodes a JPEG to packed RGB8; returns `(width, height, rgb)`.
    pub fn decode_rgb(&'static self, jpeg: &[u8]) -> Result<(u32, u32, Vec<u8>), JpegError> {
        self.with_header(jpeg, |th, w, h, _| {
            let mut rgb = vec![0u8; w as usize * h as usize * 3];
            // SAFETY: rgb holds w x h x 3 bytes at pitch w * 3, the size the header announced
            // and the library decodes to (no scaling requested).
            let rc = unsafe {
                (self.decompress2)(
                    th.handle,
                    jpeg.as_ptr(),
                    jpeg.len() as c_ulong,
                    rgb.as_mut_ptr(),
                    w,
                    w * 3,
                    h,
                    TJPF_RGB,
                    TJFLAG_LIMITSCANS,
                )
            };
            self.decoded(th, rc)?;
            Ok((w as u32, h as u32, rgb))
        })
    }

    /// Decodes a JPEG to YCbCr 4:2:0 planes: straight from the entropy decoder and IDCT when the
    /// JPEG is 4:2:0 with even sizes (no upsampling, no colour conversion), through RGB
    /// otherwise (TurboJPEG pads an odd-sized 4:2:0 luma plane to even sizes).
    pub fn decode_planes(&'static self, jpeg: &[u8]) -> Result<Planes, JpegError> {
        let direct = self.with_header(jpeg, |_, w, h, s| {
            Ok(s == TJSAMP_420 && w % 2 == 0 && h % 2 == 0)
        })?;
        if !direct {
            let (w, h, rgb) = self.decode_rgb(jpeg)?;
            return Ok(Planes::from_rgb(w, h, &rgb));
        }
        self.with_header(jpeg, |th, w, h, s| {
            // The same bytes give the same header; checked again since the sizes below rely on it.
            if s != TJSAMP_420 || w % 2 != 0 || h % 2 != 0 {
                return Err(JpegError::Decode(
                    "JPEG header changed between reads".into(),
                ));
            }
            let mut out = DECODED.take(w as u32, h as u32);
            let (cw, _) = out.chroma_size();
            let mut ptrs = [out.y.as_mut_ptr(), out.cb.as_mut_ptr(), out.cr.as_mut_ptr()];
            let mut strides = [w, cw as c_int, cw as c_int];
            // SAFETY: w and h are even (checked above on the same bytes), so the planes hold
            // exactly the w x h and w/2 x h/2 bytes at these strides that TurboJPEG writes for
            // this header (tjPlaneWidth/Height; no scaling requested).
            let rc = unsafe {
                (self.decompress_to_yuv_planes)(
                    th.handle,
                    jpeg.as_ptr(),
                    jpeg.len() as c_ulong,
                    ptrs.as_mut_ptr(),
                    w,
                    strides.as_mut_ptr(),
                    h,
                    TJFLAG_LIMITSCANS,
                )
            };
            self.decoded(th, rc)?;
            Ok(out)
        })
    }
}
