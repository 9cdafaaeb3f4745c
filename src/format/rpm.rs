//! The RPM header reader: identity, Provides, payload digest and build origin of a package
//! file, read from its header.
//!
//! The header is parsed here rather than by `rpm -qp` in a container: the file is one the
//! service already holds, the format is fixed (lead, signature header, header), and reading
//! three tags costs microseconds instead of a container start. Every length is checked
//! against the file; a malformed file is an error, never a panic.

use std::io::Read;
use std::path::Path;

const LEAD: usize = 96;
const HEADER_MAGIC: [u8; 3] = [0x8e, 0xad, 0xe8];
/// A header larger than this is refused (rpm itself caps headers at 256 MiB; Provides of
/// any real package fit in far less).
const MAX_HEADER: usize = 64 << 20;

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

/// The main header of an RPM file: its index entries and its data store, every length
/// checked against the file.
struct RawHeader {
    body: Vec<u8>,
    entries: usize,
}

impl RawHeader {
    fn read(path: &Path) -> Result<RawHeader, HeaderError> {
        let shown = path.display().to_string();
        let bad = |why: &str| HeaderError::Malformed {
            path: shown.clone(),
            why: why.to_string(),
        };
        let mut f = std::fs::File::open(path).map_err(|source| HeaderError::Io {
            path: shown.clone(),
            source,
        })?;
        let mut read_exact = |n: usize| -> Result<Vec<u8>, HeaderError> {
            let mut buf = vec![0; n];
            f.read_exact(&mut buf).map_err(|source| HeaderError::Io {
                path: shown.clone(),
                source,
            })?;
            Ok(buf)
        };
        let lead = read_exact(LEAD)?;
        if lead[..4] != [0xed, 0xab, 0xee, 0xdb] {
            return Err(bad("no RPM lead"));
        }
        // The signature header, padded to 8 bytes, then the header itself.
        let (n, size) = header_sizes(&read_exact(16)?).ok_or_else(|| bad("no signature header"))?;
        let sig_len = n * 16 + size;
        let pad = (8 - sig_len % 8) % 8;
        read_exact(sig_len + pad)?;
        let intro = read_exact(16)?;
        let (n, size) = header_sizes(&intro).ok_or_else(|| bad("no header after the signature"))?;
        Ok(RawHeader {
            body: read_exact(n * 16 + size)?,
            entries: n,
        })
    }

    /// `(tag, type, offset, count)` of each index entry, and the data store.
    fn entries(&self) -> (impl Iterator<Item = (u32, u32, usize, usize)> + '_, &[u8]) {
        let (index, store) = self.body.split_at(self.entries * 16);
        let it = index.chunks_exact(16).map(|e| {
            let word = |i: usize| u32::from_be_bytes([e[i], e[i + 1], e[i + 2], e[i + 3]]);
            (word(0), word(4), word(8) as usize, word(12) as usize)
        });
        (it, store)
    }

    /// A STRING tag's value.
    fn string(&self, tag: u32) -> Option<String> {
        let (mut it, store) = self.entries();
        let (_, _, offset, _) = it.find(|(t, ty, ..)| *t == tag && *ty == TYPE_STRING)?;
        strings(store, offset, 1)?.pop()
    }

    /// An INT32 tag's first value.
    fn int32(&self, tag: u32) -> Option<u32> {
        let (mut it, store) = self.entries();
        let (_, _, offset, _) = it.find(|(t, ty, ..)| *t == tag && *ty == TYPE_INT32)?;
        ints(store, offset, 1)?.first().copied()
    }
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
    let (mut it, store) = h.entries();
    it.find(|(t, ty, ..)| *t == TAG_PAYLOADDIGEST && *ty == TYPE_STRING_ARRAY)
        .and_then(|(_, _, offset, count)| strings(store, offset, count))
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
    let shown = path.display().to_string();
    let bad = |why: &str| HeaderError::Malformed {
        path: shown.clone(),
        why: why.to_string(),
    };
    let header = RawHeader::read(path)?;
    let (index, store) = header.entries();
    let mut names = None;
    let mut flags = None;
    let mut versions = None;
    for (tag, ty, offset, count) in index {
        match (tag, ty) {
            (TAG_PROVIDENAME, TYPE_STRING_ARRAY) => names = Some(strings(store, offset, count)),
            (TAG_PROVIDEVERSION, TYPE_STRING_ARRAY) => {
                versions = Some(strings(store, offset, count))
            }
            (TAG_PROVIDEFLAGS, TYPE_INT32) => flags = Some(ints(store, offset, count)),
            _ => {}
        }
    }
    let names = names
        .flatten()
        .ok_or_else(|| bad("the header has no readable Provides"))?;
    let flags = flags.flatten().unwrap_or_default();
    let versions = versions.flatten().unwrap_or_default();
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

fn strings(store: &[u8], offset: usize, count: usize) -> Option<Vec<String>> {
    let mut out = Vec::with_capacity(count.min(1 << 16));
    let mut at = offset;
    for _ in 0..count {
        let rest = store.get(at..)?;
        let end = rest.iter().position(|b| *b == 0)?;
        out.push(String::from_utf8_lossy(&rest[..end]).into_owned());
        at += end + 1;
    }
    Some(out)
}

fn ints(store: &[u8], offset: usize, count: usize) -> Option<Vec<u32>> {
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
