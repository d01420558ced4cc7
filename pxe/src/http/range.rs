//! The `Range` header, reduced to what boot clients use: one byte range.

/// What to send for a request's `Range` header, given the file length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeReq {
    /// No usable Range: 200 with the whole file.
    Full,
    /// 206 with bytes `start..=end`.
    Partial { start: u64, end: u64 },
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Parses `bytes=a-b`, `bytes=a-` and `bytes=-n`. A header with several ranges is answered with
/// the whole file (RFC 9110 lets a server ignore Range; boot loaders never send several). A
/// syntactically invalid header (other unit, `b < a`, garbage) is ignored the same way.
pub fn parse_range(header: Option<&str>, len: u64) -> RangeReq {
    let Some(header) = header else {
        return RangeReq::Full;
    };
    let header = header.trim();
    let Some((unit, spec)) = header.split_once('=') else {
        return RangeReq::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return RangeReq::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeReq::Full;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // "-n": the last n bytes.
        (true, false) => match number(last) {
            None => RangeReq::Full,
            Some(0) => RangeReq::Unsatisfiable,
            Some(_) if len == 0 => RangeReq::Unsatisfiable,
            Some(n) => RangeReq::Partial {
                start: len - n.min(len),
                end: len - 1,
            },
        },
        // "a-": from a to the end.
        (false, true) => match number(first) {
            None => RangeReq::Full,
            Some(a) if a >= len => RangeReq::Unsatisfiable,
            Some(a) => RangeReq::Partial {
                start: a,
                end: len - 1,
            },
        },
        (false, false) => match (number(first), number(last)) {
            (Some(a), Some(b)) if a <= b => {
                if a >= len {
                    RangeReq::Unsatisfiable
                } else {
                    RangeReq::Partial {
                        start: a,
                        end: b.min(len - 1),
                    }
                }
            }
            _ => RangeReq::Full,
        },
        (true, true) => RangeReq::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeReq::*;

    #[test]
    fn single_ranges() {
        assert_eq!(parse_range(None, 1000), Full);
        assert_eq!(
            parse_range(Some("bytes=100-199"), 1000),
            Partial {
                start: 100,
                end: 199
            }
        );
        assert_eq!(
            parse_range(Some("bytes=900-5000"), 1000),
            Partial {
                start: 900,
                end: 999
            }
        );
        assert_eq!(
            parse_range(Some("bytes=900-"), 1000),
            Partial {
                start: 900,
                end: 999
            }
        );
        assert_eq!(
            parse_range(Some("bytes=-100"), 1000),
            Partial {
                start: 900,
                end: 999
            }
        );
        assert_eq!(
            parse_range(Some("bytes=-5000"), 1000),
            Partial { start: 0, end: 999 }
        );
        assert_eq!(
            parse_range(Some("Bytes = 0-0"), 1000),
            Partial { start: 0, end: 0 }
        );
    }

    #[test]
    fn unsatisfiable_ranges() {
        assert_eq!(parse_range(Some("bytes=1000-"), 1000), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5000-6000"), 1000), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 1000), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-1"), 0), Unsatisfiable);
        assert_eq!(
            parse_range(Some("bytes=99999999999999999999-"), 1000),
            Full,
            "a number that overflows u64 is invalid syntax, ignored"
        );
    }

    #[test]
    fn invalid_or_multiple_ranges_serve_the_whole_file() {
        for h in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=-",
            "bytes",
            "bytes=+1-2",
        ] {
            assert_eq!(parse_range(Some(h), 1000), Full, "{h}");
        }
    }
}
