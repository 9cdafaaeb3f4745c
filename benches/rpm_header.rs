//! Issue 22 (H2): the host's RPM header reader on hostile files. Before the fix, a 1 MiB
//! header of duplicate Provides entries over a store of NUL bytes took 132 s of CPU (the
//! store parsed once per entry, one `String` per NUL). Prints, for crafted files of
//! growing size, the time to read (or refuse) them, and for valid headers with as many
//! Provides as fit, the time to read them: both must grow linearly with the size.
//!
//! `cargo bench --bench rpm_header`

use std::time::{Duration, Instant};

use packetary::format::rpm::rpm_provides;

const TAG_PROVIDENAME: u32 = 1047;
const TYPE_STRING_ARRAY: u32 = 8;

/// An RPM file: lead, empty signature header, a header with `entries` and `store`.
fn rpm(entries: &[(u32, u32, u32, u32)], store: &[u8]) -> Vec<u8> {
    let mut out = vec![0xed, 0xab, 0xee, 0xdb];
    out.resize(96, 0);
    let intro = |n: usize, size: usize| {
        let mut v = vec![0x8e, 0xad, 0xe8, 1, 0, 0, 0, 0];
        v.extend((n as u32).to_be_bytes());
        v.extend((size as u32).to_be_bytes());
        v
    };
    out.extend(intro(0, 0));
    out.extend(intro(entries.len(), store.len()));
    for (tag, ty, offset, count) in entries {
        for w in [tag, ty, offset, count] {
            out.extend(w.to_be_bytes());
        }
    }
    out.extend(store);
    out
}

/// The attack: half the file index entries (all PROVIDENAME, count = the store's size),
/// half a store of NULs.
fn crafted(size: usize) -> Vec<u8> {
    let store = vec![0u8; size / 2];
    let n = (size / 2 / 16).min(0xffff);
    let entries: Vec<_> = (0..n)
        .map(|_| (TAG_PROVIDENAME, TYPE_STRING_ARRAY, 0, store.len() as u32))
        .collect();
    rpm(&entries, &store)
}

/// A valid header: one PROVIDENAME entry with as many 15-byte names as fit.
fn valid(size: usize) -> Vec<u8> {
    let count = (size / 16).min(1 << 16);
    let mut store = Vec::with_capacity(size);
    for i in 0..count {
        store.extend(format!("cap{i:011}").as_bytes());
        store.push(0);
    }
    rpm(
        &[(TAG_PROVIDENAME, TYPE_STRING_ARRAY, 0, count as u32)],
        &store,
    )
}

fn time(path: &std::path::Path) -> (Duration, bool) {
    let mut best = Duration::MAX;
    let mut ok = false;
    for _ in 0..5 {
        let t = Instant::now();
        ok = rpm_provides(path).is_ok();
        best = best.min(t.elapsed());
    }
    (best, ok)
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (what, make) in [
        (
            "crafted (duplicate entries over NULs)",
            crafted as fn(usize) -> Vec<u8>,
        ),
        ("valid (as many Provides as fit)", valid),
    ] {
        let mut first = None;
        for size in [64 << 10, 256 << 10, 1 << 20] {
            let p = dir.path().join("x.rpm");
            std::fs::write(&p, make(size)).expect("write");
            let (t, ok) = time(&p);
            let base = *first.get_or_insert(t);
            println!(
                "{what}: {} KiB {} in {t:?} ({:.1}x the 64 KiB time for {}x the size)",
                size >> 10,
                if ok { "read" } else { "refused" },
                t.as_secs_f64() / base.as_secs_f64(),
                size / (64 << 10)
            );
        }
    }
}
