//! Each step of an upload's CPU work on one document, in ms per MiB (best of 30 runs), and the
//! JSON validators a crate offers against the one the server uses (serde_json's `IgnoredAny`).
//!
//!     python3 -c 'import sys; sys.path.insert(0, "bench"); import dedup, histories; \
//!         dedup.write_histories("/tmp/hist", histories.SIZES["1 MiB"], 1)'
//!     cargo run --release --manifest-path bench/upload_steps/Cargo.toml -- /tmp/hist/00000/79.json
//!
//! Add `RUSTFLAGS="-C target-cpu=x86-64-v3"` for the SIMD crates' compile-time paths.

use std::time::Instant;

use serde::de::IgnoredAny;
use sha2::{Digest, Sha256};

fn time(name: &str, bytes: usize, mut step: impl FnMut() -> usize) {
    let mut best = f64::MAX;
    let mut sink = 0;
    for _ in 0..30 {
        let started = Instant::now();
        sink += step();
        best = best.min(started.elapsed().as_secs_f64());
    }
    let per_mib = best * 1e3 * (1 << 20) as f64 / bytes as f64;
    println!("| {name} | {per_mib:.2} | {:.0} |", bytes as f64 / best / 1e6);
    std::hint::black_box(sink);
}

fn main() {
    let path = std::env::args().nth(1).expect("usage: upload_steps DOCUMENT");
    let doc = std::fs::read(&path).expect("readable document");
    let n = doc.len();
    println!("{n} bytes\n\n| step | ms per MiB | MB/s |\n|---|---|---|");
    time("UTF-8 check (std)", n, || std::str::from_utf8(&doc).map_or(0, str::len));
    time("serde_json, IgnoredAny (the server's)", n, || serde_json::from_slice::<IgnoredAny>(&doc).is_ok().into());
    time("serde_json, RawValue", n, || {
        serde_json::from_slice::<&serde_json::value::RawValue>(&doc).map_or(0, |v| v.get().len())
    });
    time("sonic-rs 0.5, IgnoredAny", n, || sonic_rs::from_slice::<IgnoredAny>(&doc).is_ok().into());
    time("sonic-rs 0.5, LazyValue", n, || {
        sonic_rs::from_slice::<sonic_rs::LazyValue>(&doc).map_or(0, |v| v.as_raw_str().len())
    });
    time("sonic-rs 0.5, Value", n, || sonic_rs::from_slice::<sonic_rs::Value>(&doc).is_ok().into());
    time("jiter 0.11, skip", n, || {
        let mut jiter = jiter::Jiter::new(&doc);
        (jiter.next_skip().is_ok() && jiter.finish().is_ok()).into()
    });
    time("simd-json 0.15, tape (on a copy)", n, || {
        let mut copy = doc.clone();
        simd_json::to_tape(&mut copy).map_or(0, |tape| tape.0.len())
    });
    time("SHA-256 (sha2)", n, || Sha256::digest(&doc)[0].into());
    time("FastCDC 2/8/32 KiB", n, || fastcdc::v2020::FastCDC::new(&doc, 2048, 8192, 32_768).count());
    time("FastCDC and SHA-256 of each chunk", n, || {
        fastcdc::v2020::FastCDC::new(&doc, 2048, 8192, 32_768)
            .map(|c| usize::from(Sha256::digest(&doc[c.offset..c.offset + c.length])[0]))
            .sum()
    });
    // What chunk names would cost with a hash built for SIMD (a data migration away).
    time("BLAKE3 (blake3)", n, || blake3::hash(&doc).as_bytes()[0].into());
    time("FastCDC and BLAKE3 of each chunk", n, || {
        fastcdc::v2020::FastCDC::new(&doc, 2048, 8192, 32_768)
            .map(|c| usize::from(blake3::hash(&doc[c.offset..c.offset + c.length]).as_bytes()[0]))
            .sum()
    });
}
