//! rpm's version comparison (`rpmvercmp`), for the downgrade rule: the repository must agree
//! with what dnf will consider newer.

use std::cmp::Ordering;

/// Compares two version (or release) strings the way rpm does: alternating runs of digits
/// and letters, digits newer than letters, `~` older than anything (pre-releases), `^`
/// newer than the end of the string (post-release snapshots).
pub fn vercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    let sep = |c: u8| !c.is_ascii_alphanumeric() && c != b'~' && c != b'^';
    loop {
        while x.first().is_some_and(|c| sep(*c)) {
            x = &x[1..];
        }
        while y.first().is_some_and(|c| sep(*c)) {
            y = &y[1..];
        }
        let (cx, cy) = (x.first().copied(), y.first().copied());
        if cx == Some(b'~') || cy == Some(b'~') {
            if cx != Some(b'~') {
                return Ordering::Greater;
            }
            if cy != Some(b'~') {
                return Ordering::Less;
            }
            x = &x[1..];
            y = &y[1..];
            continue;
        }
        if cx == Some(b'^') || cy == Some(b'^') {
            if cx.is_none() {
                return Ordering::Less;
            }
            if cy.is_none() {
                return Ordering::Greater;
            }
            if cx != Some(b'^') {
                return Ordering::Greater;
            }
            if cy != Some(b'^') {
                return Ordering::Less;
            }
            x = &x[1..];
            y = &y[1..];
            continue;
        }
        let (Some(c), Some(_)) = (cx, cy) else {
            break;
        };
        let numeric = c.is_ascii_digit();
        let run = |s: &[u8]| {
            s.iter()
                .take_while(|c| {
                    if numeric {
                        c.is_ascii_digit()
                    } else {
                        c.is_ascii_alphabetic()
                    }
                })
                .count()
        };
        let (nx, ny) = (run(x), run(y));
        let (sx, sy) = (&x[..nx], &y[..ny]);
        x = &x[nx..];
        y = &y[ny..];
        if ny == 0 {
            // A number is newer than letters in the same place.
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        let order = if numeric {
            let strip = |s: &[u8]| {
                let z = s.iter().take_while(|c| **c == b'0').count();
                s[z..].to_vec()
            };
            let (sx, sy) = (strip(sx), strip(sy));
            sx.len().cmp(&sy.len()).then_with(|| sx.cmp(&sy))
        } else {
            sx.cmp(sy)
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    match (x.is_empty(), y.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, _) => Ordering::Greater,
    }
}

/// Compares epoch (none = 0), version, then release.
pub fn evrcmp(a: (Option<u32>, &str, &str), b: (Option<u32>, &str, &str)) -> Ordering {
    a.0.unwrap_or(0)
        .cmp(&b.0.unwrap_or(0))
        .then_with(|| vercmp(a.1, b.1))
        .then_with(|| vercmp(a.2, b.2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn agrees_with_rpm() {
        // From rpm's own test suite (tests/rpmvercmp.at).
        for (a, b, want) in [
            ("1.0", "1.0", Equal),
            ("1.0", "2.0", Less),
            ("2.0.1", "2.0", Greater),
            ("2.0.1a", "2.0.1", Greater),
            ("5.5p1", "5.5p2", Less),
            ("5.5p10", "5.5p1", Greater),
            ("10xyz", "10.1xyz", Less),
            ("xyz10", "xyz10.1", Less),
            ("xyz.4", "8", Less),
            ("1b.fc17", "1.fc17", Less),
            ("1.0010", "1.9", Greater),
            ("1.05", "1.5", Equal),
            ("2a", "2.0", Less),
            ("1.0~rc1", "1.0", Less),
            ("1.0~rc1", "1.0~rc2", Less),
            ("1.0~rc1~git123", "1.0~rc1", Less),
            ("1.0^", "1.0", Greater),
            ("1.0^git1", "1.0", Greater),
            ("1.0^git1", "1.01", Less),
            ("1.0^git1~pre", "1.0^git1", Less),
            ("1.0~rc1^git1", "1.0~rc1", Greater),
            ("1_0", "1.0", Equal),
            ("20101121", "20101122", Less),
        ] {
            assert_eq!(vercmp(a, b), want, "{a} vs {b}");
            assert_eq!(vercmp(b, a), want.reverse(), "{b} vs {a}");
        }
        assert_eq!(evrcmp((Some(1), "1", "1"), (None, "9", "9")), Greater);
        assert_eq!(evrcmp((None, "1", "2"), (Some(0), "1", "10")), Less);
    }
}
