//! prost's encoder writing straight through to a file.
//!
//! `Message::encode_to_vec` builds the whole encoded model in memory
//! before a byte is written: for a 45 MB ResNet-18 that is 11 000 freshly
//! faulted pages per artefact, and hb-calib writes three models. A
//! [`WriteSink`] hands prost one reused buffer and writes it out when it
//! fills; payloads at least that large (tensor data) go to the writer
//! directly, so the file's bytes are copied once.

use bytes::buf::UninitSlice;
use bytes::{Buf, BufMut};
use std::io::Write;

/// Bytes gathered before a write.
const BUFFER: usize = 64 << 10;

/// A [`BufMut`] over a writer. Write errors are kept (the first one) and
/// returned by [`WriteSink::finish`]; after one, later bytes are dropped.
pub struct WriteSink<'a> {
    out: &'a mut dyn Write,
    buf: Vec<u8>,
    error: Option<std::io::Error>,
}

impl<'a> WriteSink<'a> {
    /// A sink writing to `out`.
    pub fn new(out: &'a mut dyn Write) -> Self {
        WriteSink {
            out,
            buf: Vec::with_capacity(BUFFER),
            error: None,
        }
    }

    /// Writes what is buffered and returns the first write error, if any.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.flush();
        self.error.map_or(Ok(()), Err)
    }

    fn flush(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        self.write(&buf);
        self.buf = buf;
        self.buf.clear();
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.error.is_none() && !bytes.is_empty() {
            if let Err(e) = self.out.write_all(bytes) {
                self.error = Some(e);
            }
        }
    }
}

// SAFETY: `chunk_mut` returns the spare capacity of `buf` (never empty:
// a full buffer is flushed first), and `advance_mut` only extends `buf`'s
// length over bytes its caller has initialised there, as `BufMut`
// requires.
unsafe impl BufMut for WriteSink<'_> {
    fn remaining_mut(&self) -> usize {
        isize::MAX as usize
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        let len = self.buf.len() + cnt;
        assert!(len <= self.buf.capacity(), "advance past the buffer");
        // SAFETY: the caller initialised these `cnt` bytes (BufMut's
        // contract) and they lie within the capacity (checked above).
        unsafe { self.buf.set_len(len) };
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        if self.buf.len() == self.buf.capacity() {
            self.flush();
        }
        UninitSlice::uninit(self.buf.spare_capacity_mut())
    }

    fn put_slice(&mut self, src: &[u8]) {
        if self.buf.len() + src.len() > self.buf.capacity() {
            self.flush();
        }
        if src.len() >= BUFFER {
            self.write(src);
        } else {
            self.buf.extend_from_slice(src);
        }
    }

    fn put<T: Buf>(&mut self, mut src: T)
    where
        Self: Sized,
    {
        while src.has_remaining() {
            let n = src.chunk().len();
            self.put_slice(src.chunk());
            src.advance(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that fails once it has taken `limit` bytes.
    struct Failing {
        taken: usize,
        limit: usize,
    }

    impl Write for Failing {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if self.taken + b.len() > self.limit {
                return Err(std::io::Error::other("disk full"));
            }
            self.taken += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bytes_arrive_in_order_across_every_put_path() {
        let small: Vec<u8> = (0..100u8).collect();
        let big: Vec<u8> = (0..3 * BUFFER + 17).map(|i| (i * 7 % 251) as u8).collect();
        let mut expected = Vec::new();
        let mut file = Vec::new();
        let mut sink = WriteSink::new(&mut file);
        for k in 0..(2 * BUFFER / small.len()) {
            sink.put_slice(&small);
            expected.extend_from_slice(&small);
            if k % 97 == 0 {
                sink.put_u32_le(k as u32);
                expected.extend_from_slice(&(k as u32).to_le_bytes());
            }
        }
        sink.put(bytes::Bytes::from(big.clone()));
        expected.extend_from_slice(&big);
        sink.put_slice(&big);
        expected.extend_from_slice(&big);
        sink.put_u8(9);
        expected.push(9);
        sink.finish().expect("a Vec takes every write");
        assert_eq!(file, expected);
    }

    #[test]
    fn the_first_write_error_is_returned() {
        let mut out = Failing {
            taken: 0,
            limit: BUFFER + 10,
        };
        let mut sink = WriteSink::new(&mut out);
        sink.put_slice(&vec![1u8; 3 * BUFFER]);
        sink.put_slice(&[2u8; 10]);
        let err = sink.finish().expect_err("the writer fails");
        assert_eq!(err.to_string(), "disk full");
    }
}
