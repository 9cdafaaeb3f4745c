//! The RPM header reader: identity, Provides, payload digest and build origin of a package
//! file, read from its header.
//!
//! The header is parsed here rather than by `rpm -qp` in a container: the file is one the
//! service already holds, the format is fixed (lead, signature header, header), and reading
//! three tags costs microseconds instead of a container start. The file comes from a build,
//! so it is hostile input: every length is checked against the file, the index is read
//! once (a tag that appears twice is refused, as rpm refuses it), a count larger than the
//! data it points into is refused, and the number of entries, of strings and the text kept
//! are capped, so that the work is linear in the file's size and the memory bounded
//! whatever the file says. A malformed file is an error, never a panic.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

const LEAD: usize = 96;
const HEADER_MAGIC: [u8; 3] = [0x8e, 0xad, 0xe8];
/// A header larger than this is refused (rpm itself caps headers at 256 MiB; Provides of
/// any real package fit in far less).
const MAX_HEADER: usize = 64 << 20;
/// Index entries of one header, as rpm caps them (`hdrchkTags`).
const MAX_ENTRIES: usize = 0xffff;
/// Strings read from one tag: far above any real package's Provides (a few thousand).
const MAX_STRINGS: usize = 1 << 16;
/// Text kept from one tag's strings, in bytes.
const MAX_TEXT: usize = 8 << 20;

const TAG_PROVIDENAME: u32 = 1047;
const TAG_PROVIDEFLAGS: u32 = 1112;
const TAG_PROVIDEVERSION: u32 = 1113;
const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_EPOCH: u32 = 1003;
const TAG_ARCH: u32 = 1022;
const TAG_SOURCERPM: u32 = 1044;
const TAG_PAYLOADDIGEST: u32 = 5092;
const TAG_BUILDTIME: u32 = 1006;
const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_STRING_ARRAY: u32 = 8;
const TYPE_I18NSTRING: u32 = 9;

const SENSE_LESS: u32 = 0x02;
const SENSE_GREATER: u32 = 0x04;
const SENSE_EQUAL: u32 = 0x08;

#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not an RPM package: {why}")]
    Malformed { path: String, why: String },
}

/// One index entry: the tag's type, where its data starts in the store, how many values.
#[derive(Debug, Clone, Copy)]
struct Entry {
    ty: u32,
    offset: usize,
    count: usize,
}

/// The main header of an RPM file: its index, read once into a map (each tag at most
/// once), and its data store; every entry checked against the store.
struct RawHeader {
    store: Vec<u8>,
    index: HashMap<u32, Entry>,
}

impl RawHeader {
    fn read(path: &Path) -> Result<RawHeader, HeaderError> {
        let shown = path.display().to_string();
        let f = std::fs::File::open(path).map_err(|source| HeaderError::Io {
            path: shown.clone(),
            source,
        })?;
        RawHeader::parse(f, shown)
    }

    /// The header from an RPM file's bytes; `shown` names the file in errors.
    fn parse(mut f: impl Read, shown: String) -> Result<RawHeader, HeaderError> {
        let mut read_exact = |n: usize| -> Result<Vec<u8>, HeaderError> {
            let mut buf = vec![0; n];
            f.read_exact(&mut buf).map_err(|source| HeaderError::Io {
                path: shown.clone(),
                source,
            })?;
            Ok(buf)
        };
        let bad = |why: String| HeaderError::Malformed {
            path: shown.clone(),
            why,
        };
        let lead = read_exact(LEAD)?;
        if lead[..4] != [0xed, 0xab, 0xee, 0xdb] {
            return Err(bad("no RPM lead".into()));
        }
        // The signature header, padded to 8 bytes, then the header itself.
        let (n, size) =
            header_sizes(&read_exact(16)?).ok_or_else(|| bad("no signature header".into()))?;
        let sig_len = n * 16 + size;
        let pad = (8 - sig_len % 8) % 8;
        read_exact(sig_len + pad)?;
        let intro = read_exact(16)?;
        let (n, size) =
            header_sizes(&intro).ok_or_else(|| bad("no header after the signature".into()))?;
        let mut body = read_exact(n * 16 + size)?;
        let store = body.split_off(n * 16);
        let index = parse_index(&body, store.len()).map_err(bad)?;
        Ok(RawHeader { store, index })
    }

    fn entry(&self, tag: u32, ty: u32) -> Option<Entry> {
        self.index.get(&tag).copied().filter(|e| e.ty == ty)
    }

    /// A STRING tag's value.
    fn string(&self, tag: u32) -> Option<String> {
        let e = self.entry(tag, TYPE_STRING)?;
        strings(&self.store, e.offset, 1)?.pop()
    }

    /// An INT32 tag's first value.
    fn int32(&self, tag: u32) -> Option<u32> {
        let e = self.entry(tag, TYPE_INT32)?;
        ints(&self.store, e.offset, 1)?.first().copied()
    }

    /// A STRING_ARRAY tag's values.
    fn string_array(&self, tag: u32) -> Option<Vec<String>> {
        let e = self.entry(tag, TYPE_STRING_ARRAY)?;
        strings(&self.store, e.offset, e.count)
    }

    /// An INT32 tag's values.
    fn int32_array(&self, tag: u32) -> Option<Vec<u32>> {
        let e = self.entry(tag, TYPE_INT32)?;
        ints(&self.store, e.offset, e.count)
    }
}

/// Reads the index entries (16 bytes each) against a store of `store_len` bytes: each tag
/// once, each entry's data inside the store (a string takes at least one byte, an INT32
/// four), at most [`MAX_ENTRIES`]. Linear in the index's size.
fn parse_index(index: &[u8], store_len: usize) -> Result<HashMap<u32, Entry>, String> {
    let n = index.len() / 16;
    if n > MAX_ENTRIES {
        return Err(format!(
            "the header has {n} index entries (at most {MAX_ENTRIES})"
        ));
    }
    let mut out = HashMap::with_capacity(n);
    for e in index.chunks_exact(16) {
        #[cfg(test)]
        tests::SCANNED.with(|c| c.set(c.get() + 16));
        let word = |i: usize| u32::from_be_bytes([e[i], e[i + 1], e[i + 2], e[i + 3]]);
        let (tag, ty) = (word(0), word(4));
        let (offset, count) = (word(8) as usize, word(12) as usize);
        let room = store_len.checked_sub(offset).ok_or_else(|| {
            format!("tag {tag} points past the header's data ({offset} > {store_len})")
        })?;
        let least = match ty {
            TYPE_INT32 => count.checked_mul(4),
            TYPE_STRING | TYPE_STRING_ARRAY | TYPE_I18NSTRING => Some(count),
            _ => Some(0),
        };
        if least.is_none_or(|l| l > room) {
            return Err(format!(
                "tag {tag} claims {count} value(s) in {room} byte(s) of data"
            ));
        }
        if out.insert(tag, Entry { ty, offset, count }).is_some() {
            return Err(format!("tag {tag} appears twice in the header"));
        }
    }
    Ok(out)
}

/// What names a package in a repository: name, epoch, version, release, architecture, and
/// whether it is a source package (an SRPM names no source RPM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpmIdentity {
    pub name: String,
    pub epoch: Option<u32>,
    pub version: String,
    pub release: String,
    pub arch: String,
    pub source: bool,
}

/// Reads [`RpmIdentity`] from an RPM's header.
pub fn rpm_identity(path: &Path) -> Result<RpmIdentity, HeaderError> {
    let h = RawHeader::read(path)?;
    let bad = |what: &str| HeaderError::Malformed {
        path: path.display().to_string(),
        why: format!("the header has no {what}"),
    };
    let source = h.string(TAG_SOURCERPM).is_none();
    Ok(RpmIdentity {
        name: h.string(TAG_NAME).ok_or_else(|| bad("name"))?,
        epoch: h.int32(TAG_EPOCH),
        version: h.string(TAG_VERSION).ok_or_else(|| bad("version"))?,
        release: h.string(TAG_RELEASE).ok_or_else(|| bad("release"))?,
        arch: if source {
            "src".to_string()
        } else {
            h.string(TAG_ARCH).ok_or_else(|| bad("architecture"))?
        },
        source,
    })
}

/// The digest of an RPM's payload as rpm prints it (`%{PAYLOADDIGEST}`, hex): equal
/// digests, equal files installed, whatever the headers and signatures say.
pub fn rpm_payload_digest(path: &Path) -> Result<String, HeaderError> {
    let h = RawHeader::read(path)?;
    h.string_array(TAG_PAYLOADDIGEST)
        .and_then(|v| v.into_iter().next())
        .ok_or_else(|| HeaderError::Malformed {
            path: path.display().to_string(),
            why: "the header has no payload digest (an rpm older than 4.14 made it)".into(),
        })
}

/// An RPM's build time (seconds since the epoch) and, for a binary package, the file name
/// of its source package: what a rebuild of a published package needs to know (the build
/// time is the build's `SOURCE_DATE_EPOCH`, since rpm is told to use it).
pub fn rpm_build_origin(path: &Path) -> Result<(i64, Option<String>), HeaderError> {
    let h = RawHeader::read(path)?;
    let time = h
        .int32(TAG_BUILDTIME)
        .ok_or_else(|| HeaderError::Malformed {
            path: path.display().to_string(),
            why: "the header has no build time".into(),
        })?;
    Ok((i64::from(time), h.string(TAG_SOURCERPM)))
}

/// The Provides of one binary RPM, as rpm prints them (`name`, `name = version`).
pub fn rpm_provides(path: &Path) -> Result<Vec<String>, HeaderError> {
    provides_of(&RawHeader::read(path)?, path.display().to_string())
}

fn provides_of(header: &RawHeader, shown: String) -> Result<Vec<String>, HeaderError> {
    let bad = |why: &str| HeaderError::Malformed {
        path: shown.clone(),
        why: why.to_string(),
    };
    let names = header
        .string_array(TAG_PROVIDENAME)
        .ok_or_else(|| bad("the header has no readable Provides"))?;
    let flags = header.int32_array(TAG_PROVIDEFLAGS).unwrap_or_default();
    let versions = header.string_array(TAG_PROVIDEVERSION).unwrap_or_default();
    Ok(names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let v = versions.get(i).map(String::as_str).unwrap_or("");
            let f = flags.get(i).copied().unwrap_or(0);
            let op = match (
                f & SENSE_LESS != 0,
                f & SENSE_GREATER != 0,
                f & SENSE_EQUAL != 0,
            ) {
                (true, false, true) => "<=",
                (true, false, false) => "<",
                (false, true, true) => ">=",
                (false, true, false) => ">",
                (false, false, true) => "=",
                _ => "",
            };
            if v.is_empty() || op.is_empty() {
                name.clone()
            } else {
                format!("{name} {op} {v}")
            }
        })
        .collect())
}

/// Index entry count and data size of a header's 16-byte intro.
fn header_sizes(intro: &[u8]) -> Option<(usize, usize)> {
    if intro.len() < 16 || intro[..3] != HEADER_MAGIC {
        return None;
    }
    let n = u32::from_be_bytes([intro[8], intro[9], intro[10], intro[11]]) as usize;
    let size = u32::from_be_bytes([intro[12], intro[13], intro[14], intro[15]]) as usize;
    (n.checked_mul(16)?.checked_add(size)? <= MAX_HEADER).then_some((n, size))
}

/// `count` NUL-terminated strings from `offset`: `None` when they run past the store,
/// are more than [`MAX_STRINGS`] or hold more than [`MAX_TEXT`] bytes. Each byte of the
/// store is looked at once.
fn strings(store: &[u8], offset: usize, count: usize) -> Option<Vec<String>> {
    if count > MAX_STRINGS {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    let mut at = offset;
    let mut text = 0usize;
    for _ in 0..count {
        let rest = store.get(at..)?;
        let end = rest.iter().position(|b| *b == 0)?;
        #[cfg(test)]
        tests::SCANNED.with(|c| c.set(c.get() + end + 1));
        text += end;
        if text > MAX_TEXT {
            return None;
        }
        out.push(String::from_utf8_lossy(&rest[..end]).into_owned());
        at += end + 1;
    }
    Some(out)
}

fn ints(store: &[u8], offset: usize, count: usize) -> Option<Vec<u32>> {
    if count > MAX_STRINGS {
        return None;
    }
    let bytes = store.get(offset..offset.checked_add(count.checked_mul(4)?)?)?;
    Some(
        bytes
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    thread_local! {
        /// Bytes of index and store the parser looked at: the work, for the property test.
        pub static SCANNED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// An RPM file's bytes: a lead, an empty signature header, then a header with these
    /// index entries `(tag, type, offset, count)` and data store.
    fn rpm(entries: &[(u32, u32, u32, u32)], store: &[u8]) -> Vec<u8> {
        let mut out = vec![0xed, 0xab, 0xee, 0xdb];
        out.resize(LEAD, 0);
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

    fn provides(bytes: &[u8]) -> Result<Vec<String>, HeaderError> {
        provides_of(
            &RawHeader::parse(bytes, "test.rpm".into())?,
            "test.rpm".into(),
        )
    }

    #[test]
    fn provides_read_as_rpm_prints_them() {
        let store = b"foo\0libfoo.so.1()(64bit)\x001.0-1\0\0\0\0\0\x08\0\0\0\0";
        let bytes = rpm(
            &[
                (TAG_PROVIDENAME, TYPE_STRING_ARRAY, 0, 2),
                (TAG_PROVIDEVERSION, TYPE_STRING_ARRAY, 25, 2),
                (TAG_PROVIDEFLAGS, TYPE_INT32, 32, 2),
            ],
            store,
        );
        assert_eq!(
            provides(&bytes).expect("provides"),
            ["foo = 1.0-1", "libfoo.so.1()(64bit)"]
        );
    }

    /// The attack of issue 22 (H2): many index entries for the same tag, each pointing at
    /// a store of NUL bytes with a count as large as the store, made the reader parse the
    /// store once per entry, one `String` per NUL. Such a header is refused.
    #[test]
    fn a_tag_that_appears_twice_is_refused() {
        let store = vec![0u8; 16 << 10];
        let entries: Vec<_> = (0..200)
            .map(|_| (TAG_PROVIDENAME, TYPE_STRING_ARRAY, 0, store.len() as u32))
            .collect();
        let err = provides(&rpm(&entries, &store)).expect_err("refused");
        assert!(err.to_string().contains("appears twice"), "{err}");
    }

    #[test]
    fn a_count_larger_than_its_data_is_refused() {
        let store = vec![0u8; 64];
        for (ty, count) in [(TYPE_STRING_ARRAY, 65), (TYPE_INT32, 17)] {
            let tag = if ty == TYPE_INT32 {
                TAG_PROVIDEFLAGS
            } else {
                TAG_PROVIDENAME
            };
            let err = provides(&rpm(&[(tag, ty, 0, count)], &store)).expect_err("refused");
            assert!(err.to_string().contains("claims"), "{err}");
        }
        let err = provides(&rpm(&[(TAG_PROVIDENAME, TYPE_STRING_ARRAY, 65, 0)], &store))
            .expect_err("refused");
        assert!(err.to_string().contains("past the header"), "{err}");
    }

    /// Work linear in the file's size and a bounded result, whatever the header says:
    /// random headers, and crafted ones (the interesting tags, NUL-filled stores, counts
    /// at and past the store's size, duplicates).
    #[test]
    fn work_is_linear_in_the_file_and_memory_bounded_for_random_and_crafted_headers() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(22);
        let tags = [
            TAG_PROVIDENAME,
            TAG_PROVIDEVERSION,
            TAG_PROVIDEFLAGS,
            TAG_NAME,
            rng.random(),
        ];
        let types = [TYPE_STRING_ARRAY, TYPE_INT32, TYPE_STRING, rng.random()];
        let mut worst = 0f64;
        for round in 0..20_000 {
            let store_len = rng.random_range(0..4096usize);
            let store: Vec<u8> = (0..store_len)
                .map(|_| {
                    if rng.random_bool(0.7) {
                        0
                    } else {
                        rng.random()
                    }
                })
                .collect();
            let n = rng.random_range(0..40usize);
            let entries: Vec<_> = (0..n)
                .map(|_| {
                    let offset = match rng.random_range(0..3) {
                        0 => 0,
                        1 => rng.random_range(0..=store_len as u32),
                        _ => rng.random(),
                    };
                    let count = match rng.random_range(0..4) {
                        0 => store_len as u32,
                        1 => store_len as u32 + 1,
                        2 => rng.random_range(0..=store_len as u32),
                        _ => rng.random(),
                    };
                    (
                        tags[rng.random_range(0..tags.len())],
                        types[rng.random_range(0..types.len())],
                        offset,
                        count,
                    )
                })
                .collect();
            let mut bytes = rpm(&entries, &store);
            if round % 10 == 0 && !bytes.is_empty() {
                // Random damage anywhere, the lead and sizes included.
                let at = rng.random_range(0..bytes.len());
                bytes[at] = rng.random();
            }
            SCANNED.with(|c| c.set(0));
            let got = provides(&bytes);
            let work = SCANNED.with(|c| c.get());
            // Each of the three tags read scans the store at most once, plus the index.
            let bound = 3 * store_len + 16 * n + 64;
            assert!(work <= bound, "round {round}: work {work} > {bound}");
            worst = worst.max(work as f64 / bytes.len().max(1) as f64);
            if let Ok(p) = got {
                let kept: usize = p.iter().map(|s| s.len() + 24).sum();
                assert!(kept <= 3 * (MAX_TEXT + 24 * MAX_STRINGS));
                assert!(p.len() <= MAX_STRINGS);
            }
        }
        assert!(worst <= 3.0, "work per byte of file: {worst}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tmp");
        for (name, bytes) in [
            ("empty.rpm", vec![]),
            ("text.rpm", b"hello".repeat(40)),
            (
                "lead-only.rpm",
                [vec![0xed, 0xab, 0xee, 0xdb], vec![0; 92]].concat(),
            ),
            (
                "huge.rpm",
                [
                    vec![0xed, 0xab, 0xee, 0xdb],
                    vec![0; 92],
                    vec![
                        0x8e, 0xad, 0xe8, 1, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                        0xff,
                    ],
                ]
                .concat(),
            ),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).expect("write");
            assert!(rpm_provides(&p).is_err(), "{name}");
        }
    }
}
