//! Run-time CPU dispatch for plain loops: [`avx2_when_available!`] defines a function whose body
//! is compiled twice, once for the baseline x86-64 (SSE2) and once with AVX2 enabled, and calls
//! the AVX2 copy when the CPU has it. The body stays ordinary, safe Rust that the compiler
//! vectorises; only the width of its vectors changes. Used by the detector's per-pixel loops.

/// `avx2_when_available! { fn name(arg: Type, …) -> Ret { body } }`: see the module docs.
macro_rules! avx2_when_available {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2")]
            fn avx2($($arg: $ty),*) $(-> $ret)? {
                body($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above).
                return unsafe { avx2($($arg),*) };
            }
            body($($arg),*)
        }
    };
}

pub(crate) use avx2_when_available;
