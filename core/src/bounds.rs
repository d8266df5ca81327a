//! Sizes a peer's Automerge storage chunks declare, checked before Automerge decodes them.
//!
//! Automerge inflates compressed chunks and columns without a limit, and its run-length encoded
//! columns can say "this value, a trillion times" in a few bytes: a 1 MB frame can ask a receiver
//! for gigabytes of memory or hours of work (a red team took a desktop to 3.18 GB with one). This
//! module reads the chunk and column headers of the [binary format] itself, inflates compressed
//! data into a bounded buffer, and counts the rows of every column by walking its runs, without
//! expanding them. Only chunks whose totals stay within [`Limits`] go on to Automerge.
//!
//! [binary format]: https://automerge.org/automerge-binary-format-spec/

use std::io::Read;

/// Automerge's storage chunk magic bytes.
pub const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// Chunk type of a whole document.
pub const CHUNK_DOCUMENT: u8 = 0;
/// Chunk type of one change.
pub const CHUNK_CHANGE: u8 = 1;
/// Chunk type of one deflate-compressed change.
pub const CHUNK_COMPRESSED: u8 = 2;

/// What one sync message may make the receiver do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of change data after inflating, over the whole message.
    pub max_inflated_bytes: u64,
    /// Rows (operations, and entries of any other column) over the whole message.
    pub max_rows: u64,
    /// Changes in the message (a whole document counts all of its changes).
    pub max_changes: u64,
    /// Operations in one change.
    pub max_ops_per_change: u64,
    /// Bytes of one frame's body (a sync message and its framing).
    pub max_frame_bytes: usize,
}

impl Limits {
    /// What a desktop accepts from a phone: far more than a person writes between two syncs
    /// (10,000 offline messages are ~70,000 operations and ~1 MB), far less than hurts.
    pub const FROM_PHONE: Limits = Limits {
        max_inflated_bytes: 32 << 20,
        max_rows: 2_000_000,
        max_changes: 200_000,
        max_ops_per_change: 10_000,
        max_frame_bytes: 16 << 20,
    };
    /// What a phone accepts from its desktop, which may send the whole workspace at once.
    pub const FROM_DESKTOP: Limits = Limits {
        max_inflated_bytes: 1 << 30,
        max_rows: 50_000_000,
        max_changes: 10_000_000,
        max_ops_per_change: 1_000_000,
        max_frame_bytes: crate::frame::MAX_FRAME_LEN,
    };
}

/// Why chunks were refused before decoding.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BoundsError {
    /// The bytes are not the chunk format they claim to be.
    #[error("undecodable changes: {0}")]
    Malformed(&'static str),
    /// A chunk type this receiver does not take from a peer.
    #[error("undecodable changes: chunk type {0} is not accepted in a sync message")]
    ChunkType(u8),
    /// A declared or inflated size is over a limit.
    #[error("the changes are too large: {what} is over the limit of {limit}")]
    TooLarge {
        /// What was counted.
        what: &'static str,
        /// The limit.
        limit: u64,
    },
}

/// Running totals over the chunks of one message.
#[derive(Debug)]
pub struct Budget {
    limits: Limits,
    inflated: u64,
    rows: u64,
    changes: u64,
}

impl Budget {
    /// A fresh budget for one message.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            inflated: 0,
            rows: 0,
            changes: 0,
        }
    }

    /// Checks one storage chunk (`bytes` is the whole chunk, header included) and adds what it
    /// declares to the totals. Errors say which limit or which part of the format failed.
    pub fn check_chunk(&mut self, bytes: &[u8]) -> Result<(), BoundsError> {
        let (kind, body) = chunk_body(bytes)?;
        match kind {
            CHUNK_CHANGE => {
                self.count_inflated(body.len())?;
                self.change_body(body)
            }
            CHUNK_COMPRESSED => {
                let inflated = self.inflate(body)?;
                self.change_body(&inflated)
            }
            CHUNK_DOCUMENT => {
                self.count_inflated(body.len())?;
                self.document_body(body)
            }
            other => Err(BoundsError::ChunkType(other)),
        }
    }

    fn add_changes(&mut self, n: u64) -> Result<(), BoundsError> {
        self.changes = self.changes.saturating_add(n);
        if self.changes > self.limits.max_changes {
            return Err(BoundsError::TooLarge {
                what: "the number of changes",
                limit: self.limits.max_changes,
            });
        }
        Ok(())
    }

    fn add_rows(&mut self, n: u64) -> Result<(), BoundsError> {
        self.rows = self.rows.saturating_add(n);
        if self.rows > self.limits.max_rows {
            return Err(BoundsError::TooLarge {
                what: "the number of operations",
                limit: self.limits.max_rows,
            });
        }
        Ok(())
    }

    /// Inflates raw deflate data, stopping as soon as the message's allowance is spent.
    fn inflate(&mut self, data: &[u8]) -> Result<Vec<u8>, BoundsError> {
        let allowance = self.limits.max_inflated_bytes.saturating_sub(self.inflated);
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(data)
            .take(allowance.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|_| BoundsError::Malformed("a compressed part does not inflate"))?;
        let n = out.len() as u64;
        if n > allowance {
            return Err(BoundsError::TooLarge {
                what: "the inflated size of the changes",
                limit: self.limits.max_inflated_bytes,
            });
        }
        self.inflated += n;
        Ok(out)
    }

    fn count_inflated(&mut self, n: usize) -> Result<(), BoundsError> {
        self.inflated = self.inflated.saturating_add(n as u64);
        if self.inflated > self.limits.max_inflated_bytes {
            return Err(BoundsError::TooLarge {
                what: "the inflated size of the changes",
                limit: self.limits.max_inflated_bytes,
            });
        }
        Ok(())
    }

    fn change_body(&mut self, body: &[u8]) -> Result<(), BoundsError> {
        let mut r = Reader(body);
        let deps = r.uleb()?;
        r.skip(deps.checked_mul(32).ok_or(BAD_LEN)?)?;
        let actor_len = r.uleb()?;
        r.skip(actor_len)?;
        let _seq = r.uleb()?;
        let _start_op = r.uleb()?;
        let _time = r.sleb()?;
        let message_len = r.uleb()?;
        r.skip(message_len)?;
        let others = r.uleb()?;
        for _ in 0..others {
            let len = r.uleb()?;
            r.skip(len)?;
        }
        let columns = r.columns()?;
        let ops = self.columns(&mut r, &columns, false)?;
        if ops > self.limits.max_ops_per_change {
            return Err(BoundsError::TooLarge {
                what: "the number of operations in one change",
                limit: self.limits.max_ops_per_change,
            });
        }
        self.add_changes(1)
    }

    fn document_body(&mut self, body: &[u8]) -> Result<(), BoundsError> {
        let mut r = Reader(body);
        let actors = r.uleb()?;
        for _ in 0..actors {
            let len = r.uleb()?;
            r.skip(len)?;
        }
        let heads = r.uleb()?;
        r.skip(heads.checked_mul(32).ok_or(BAD_LEN)?)?;
        let change_columns = r.columns()?;
        let op_columns = r.columns()?;
        let changes = self.columns(&mut r, &change_columns, true)?;
        self.add_changes(changes)?;
        self.columns(&mut r, &op_columns, true)?;
        Ok(())
    }

    /// Walks the data of `columns` (read from `r`), adds their rows to the totals and returns the
    /// largest row count of one column (the number of operations, or of changes).
    fn columns(
        &mut self,
        r: &mut Reader<'_>,
        columns: &[(u64, u64)],
        deflate_allowed: bool,
    ) -> Result<u64, BoundsError> {
        let mut most = 0u64;
        for &(spec, len) in columns {
            let data = r.take(len)?;
            let inflated;
            let data = if spec & 0b1000 != 0 {
                if !deflate_allowed {
                    return Err(BoundsError::Malformed("a change with compressed columns"));
                }
                inflated = self.inflate(data)?;
                &inflated[..]
            } else {
                data
            };
            let (rows, group_sum) = count_rows((spec & 0b111) as u8, data)?;
            // A group column says how many entries the following columns hold for each row.
            self.add_rows(rows.max(group_sum))?;
            most = most.max(rows);
        }
        Ok(most)
    }
}

const BAD_LEN: BoundsError = BoundsError::Malformed("a length is out of range");

/// Splits a chunk into its type and body, checking magic and declared length.
fn chunk_body(bytes: &[u8]) -> Result<(u8, &[u8]), BoundsError> {
    if bytes.len() < 9 || bytes[..4] != CHUNK_MAGIC {
        return Err(BoundsError::Malformed("not an Automerge chunk"));
    }
    let kind = bytes[8];
    let mut r = Reader(&bytes[9..]);
    let len = r.uleb()?;
    let body = r.take(len)?;
    if !r.0.is_empty() {
        return Err(BoundsError::Malformed("bytes after the end of a chunk"));
    }
    Ok((kind, body))
}

/// Rows in one column of Automerge's column types, and for group columns the sum of the values
/// (how many entries the grouped columns hold). Runs are counted, never expanded.
fn count_rows(col_type: u8, data: &[u8]) -> Result<(u64, u64), BoundsError> {
    let mut r = Reader(data);
    let (mut rows, mut sum) = (0u64, 0u64);
    match col_type {
        // Value: raw bytes, addressed by the value-metadata column.
        7 => return Ok((0, 0)),
        // Boolean: alternating run lengths, false first.
        4 => {
            while !r.0.is_empty() {
                rows = rows.saturating_add(r.uleb()?);
            }
        }
        // Group, actor, integer, delta, string, value metadata: run-length encoded.
        _ => {
            while !r.0.is_empty() {
                let n = r.sleb()?;
                if n > 0 {
                    let v = read_value(&mut r, col_type)?;
                    rows = rows.saturating_add(n as u64);
                    sum = sum.saturating_add(v.saturating_mul(n as u64));
                } else if n < 0 {
                    for _ in 0..n.unsigned_abs() {
                        sum = sum.saturating_add(read_value(&mut r, col_type)?);
                    }
                    rows = rows.saturating_add(n.unsigned_abs());
                } else {
                    rows = rows.saturating_add(r.uleb()?);
                }
            }
        }
    }
    Ok((rows, if col_type == 0 { sum } else { 0 }))
}

/// One value of a run-length encoded column; its magnitude for group columns, else 0.
fn read_value(r: &mut Reader<'_>, col_type: u8) -> Result<u64, BoundsError> {
    match col_type {
        3 => r.sleb().map(|_| 0),
        5 => {
            let len = r.uleb()?;
            r.skip(len).map(|_| 0)
        }
        _ => r.uleb(),
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8], BoundsError> {
        let n = usize::try_from(n).map_err(|_| BAD_LEN)?;
        if n > self.0.len() {
            return Err(BoundsError::Malformed("truncated data"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn skip(&mut self, n: u64) -> Result<(), BoundsError> {
        self.take(n).map(|_| ())
    }

    fn uleb(&mut self) -> Result<u64, BoundsError> {
        let (mut v, mut shift) = (0u64, 0u32);
        loop {
            let (&b, rest) = self
                .0
                .split_first()
                .ok_or(BoundsError::Malformed("truncated number"))?;
            self.0 = rest;
            if shift == 63 && b > 1 || shift > 63 {
                return Err(BoundsError::Malformed("number too large"));
            }
            v |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
    }

    fn sleb(&mut self) -> Result<i64, BoundsError> {
        let (mut v, mut shift) = (0i64, 0u32);
        loop {
            let (&b, rest) = self
                .0
                .split_first()
                .ok_or(BoundsError::Malformed("truncated number"))?;
            self.0 = rest;
            if shift > 63 {
                return Err(BoundsError::Malformed("number too large"));
            }
            v |= i64::from(b & 0x7f).wrapping_shl(shift);
            shift += 7;
            if b & 0x80 == 0 {
                if shift < 64 && b & 0x40 != 0 {
                    v |= -1i64 << shift;
                }
                return Ok(v);
            }
        }
    }

    /// Column metadata: a count, then (specification, length) pairs.
    fn columns(&mut self) -> Result<Vec<(u64, u64)>, BoundsError> {
        let n = self.uleb()?;
        if n > 64 {
            return Err(BoundsError::Malformed("too many columns"));
        }
        (0..n).map(|_| Ok((self.uleb()?, self.uleb()?))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::{Automerge, ROOT};

    fn doc_with(n: usize) -> Automerge {
        let mut d = Automerge::new();
        for i in 0..n {
            let mut tx = d.transaction();
            tx.put(ROOT, format!("k{i}"), "x".repeat(i % 50)).unwrap();
            tx.commit();
        }
        d
    }

    #[test]
    fn honest_changes_and_documents_are_counted() {
        let d = doc_with(300);
        let mut b = Budget::new(Limits::FROM_PHONE);
        for mut c in d.get_changes(&[]) {
            b.check_chunk(c.bytes().as_ref()).unwrap();
            b.check_chunk(c.raw_bytes()).unwrap();
        }
        assert_eq!(b.changes, 600);
        let mut b = Budget::new(Limits::FROM_PHONE);
        b.check_chunk(&d.save()).unwrap();
        b.check_chunk(&d.save_nocompress()).unwrap();
        assert_eq!(b.changes, 600);
        assert!(b.rows >= 600, "{}", b.rows);
    }

    fn chunk(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = CHUNK_MAGIC.to_vec();
        out.extend([0, 0, 0, 0, kind]);
        let mut n = body.len() as u64;
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n == 0 { b } else { b | 0x80 });
            if n == 0 {
                break;
            }
        }
        out.extend(body);
        out
    }

    #[test]
    fn a_compression_bomb_is_refused_before_it_inflates() {
        use std::io::Write;
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            enc.write_all(&zeros).unwrap();
        }
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 128 << 10, "{}", bomb.len());
        let e = Budget::new(Limits::FROM_PHONE)
            .check_chunk(&chunk(CHUNK_COMPRESSED, &bomb))
            .unwrap_err();
        assert!(matches!(e, BoundsError::TooLarge { .. }), "{e}");
    }

    #[test]
    fn a_run_of_a_trillion_rows_is_refused_without_expanding_it() {
        // A change body: no deps, actor of 1 byte, seq 1, start_op 1, time 0, no message, no
        // other actors, one action column (spec 0x42) holding one run: 10^12 × action 1.
        let mut col = Vec::new();
        let mut n: u64 = 1_000_000_000_000;
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            // The run length is signed LEB128: keep the sign bit clear on the last byte.
            if n == 0 && b & 0x40 == 0 {
                col.push(b);
                break;
            }
            col.push(b | 0x80);
        }
        col.push(1);
        let mut body = vec![0, 1, 7, 1, 1, 0, 0, 0, 1, 0x42, col.len() as u8];
        body.extend(&col);
        let e = Budget::new(Limits::FROM_PHONE)
            .check_chunk(&chunk(CHUNK_CHANGE, &body))
            .unwrap_err();
        assert!(matches!(e, BoundsError::TooLarge { .. }), "{e}");
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let d = doc_with(20);
        let saved = d.save();
        let mut b = Budget::new(Limits::FROM_DESKTOP);
        for cut in 0..saved.len() {
            let _ = b.check_chunk(&saved[..cut]);
        }
        for i in 9..saved.len() {
            let mut bad = saved.clone();
            bad[i] ^= 0xff;
            let _ = Budget::new(Limits::FROM_DESKTOP).check_chunk(&bad);
        }
        assert!(matches!(
            b.check_chunk(b"not a chunk at all"),
            Err(BoundsError::Malformed(_))
        ));
        assert!(matches!(
            b.check_chunk(&chunk(3, &[])),
            Err(BoundsError::ChunkType(3))
        ));
    }
}
