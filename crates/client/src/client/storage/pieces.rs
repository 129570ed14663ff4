//! The reading side of `put`: a thread of its own reads the input, cuts it
//! into chunks with the generation's keyed chunker (PROTOCOL.md §10.8) and
//! hashes each chunk under the chunk id key, handing the pieces on through
//! a bounded channel. Reading and hashing so overlap sealing and
//! uploading, and memory holds a fixed number of chunks whatever the
//! file's size.

use std::io::{self, Read};

use bytes::Bytes;
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use crate::chunking::{AVERAGE_CHUNK, Chunker, MAX_CHUNK};
use crate::manifest::chunk_key_hash;

/// One chunk of the input.
pub(super) struct Piece {
    /// Its place in the file, from 0.
    pub index: usize,
    /// Its plaintext.
    pub plain: Bytes,
    /// Its keyed hash (§10.8).
    pub key_hash: [u8; 32],
    /// Whether it is the whole input: the file is then stored as one blob.
    pub whole: bool,
}

/// Starts reading `input` on a thread; the pieces (or the read error that
/// ended them) arrive on the receiver, at most `ahead` of them waiting.
pub(super) fn read(
    input: Box<dyn Read + Send>,
    chunker: Chunker,
    id_key: Zeroizing<[u8; 32]>,
    ahead: usize,
) -> mpsc::Receiver<io::Result<Piece>> {
    let (tx, rx) = mpsc::channel(ahead.max(1));
    std::thread::spawn(move || {
        let mut cutter = Cutter::new(input, chunker, id_key);
        loop {
            let next = cutter.next_piece();
            let done = !matches!(next, Ok(Some(_)));
            let sent = match next {
                Ok(Some(piece)) => tx.blocking_send(Ok(piece)),
                Ok(None) => Ok(()),
                Err(err) => tx.blocking_send(Err(err)),
            };
            // A closed channel means the put gave up: stop reading.
            if done || sent.is_err() {
                break;
            }
        }
    });
    rx
}

/// Cuts a stream into pieces, holding only the chunk being read: bytes are
/// read in steps until a cut shows, and the chunk's buffer becomes the
/// piece as it is (only the bytes read past the cut are copied).
struct Cutter {
    input: Box<dyn Read + Send>,
    chunker: Chunker,
    id_key: Zeroizing<[u8; 32]>,
    /// Bytes read and not yet handed on.
    held: Vec<u8>,
    eof: bool,
    index: usize,
}

/// How far a chunk's buffer is filled before the chunker looks: most cuts
/// fall before the average size, the rest before the maximum.
const STEPS: [usize; 2] = [AVERAGE_CHUNK + (AVERAGE_CHUNK >> 2), MAX_CHUNK];

impl Cutter {
    fn new(input: Box<dyn Read + Send>, chunker: Chunker, id_key: Zeroizing<[u8; 32]>) -> Self {
        Self {
            input,
            chunker,
            id_key,
            held: Vec::new(),
            eof: false,
            index: 0,
        }
    }

    /// The next piece; `None` once the input is used up (an empty input is
    /// one empty piece, stored like any small file).
    fn next_piece(&mut self) -> io::Result<Option<Piece>> {
        let mut len = None;
        for step in STEPS {
            self.fill(step)?;
            len = self.chunker.cut(&self.held, self.eof);
            if len.is_some() {
                break;
            }
        }
        // With `MAX_CHUNK` bytes held, or the input ended, `cut` answers.
        let len = len.unwrap_or(self.held.len()).min(self.held.len());
        if len == 0 && self.index > 0 {
            return Ok(None);
        }
        let rest = self.held.split_off(len);
        let mut chunk = std::mem::replace(&mut self.held, rest);
        chunk.shrink_to_fit();
        let piece = Piece {
            index: self.index,
            key_hash: chunk_key_hash(&self.id_key, &chunk),
            whole: self.index == 0 && self.eof && self.held.is_empty(),
            plain: Bytes::from(chunk),
        };
        self.index += 1;
        Ok(Some(piece))
    }

    /// Reads until `target` bytes are held or the input ends.
    fn fill(&mut self, target: usize) -> io::Result<()> {
        if self.held.len() >= target || self.eof {
            return Ok(());
        }
        self.held.reserve_exact(target - self.held.len());
        // `read_to_end` retries interrupted reads and stops at the limit or
        // at the end of the input, whichever comes first.
        (&mut self.input)
            .take((target - self.held.len()) as u64)
            .read_to_end(&mut self.held)?;
        self.eof = self.held.len() < target;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A reader that hands out at most `step` bytes per call, as pipes do.
    struct Trickle(io::Cursor<Vec<u8>>, usize);

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.1);
            self.0.read(&mut buf[..n])
        }
    }

    fn pieces(data: &[u8], step: usize) -> Vec<Piece> {
        let input = Box::new(Trickle(io::Cursor::new(data.to_vec()), step));
        let mut cutter = Cutter::new(input, Chunker::new(&[7; 32]), Zeroizing::new([8; 32]));
        std::iter::from_fn(|| cutter.next_piece().unwrap()).collect()
    }

    #[test]
    fn a_stream_is_cut_as_the_whole_file_is() {
        let mut data = vec![0u8; 20 << 20];
        blake3::Hasher::new().finalize_xof().fill(&mut data);
        let expected = Chunker::new(&[7; 32]).lengths(&data);
        assert!(expected.len() > 3, "{expected:?}");
        for step in [1 << 20, 65_536, 1_000_003] {
            let got = pieces(&data, step);
            let lengths: Vec<usize> = got.iter().map(|p| p.plain.len()).collect();
            assert_eq!(lengths, expected, "step {step}");
            let joined: Vec<u8> = got.iter().flat_map(|p| p.plain.to_vec()).collect();
            assert_eq!(joined, data);
            assert!(got.iter().all(|p| !p.whole));
            assert!(got.iter().enumerate().all(|(i, p)| p.index == i));
            assert_eq!(got[1].key_hash, chunk_key_hash(&[8; 32], &got[1].plain));
        }
    }

    #[test]
    fn small_and_empty_inputs_are_one_whole_piece() {
        for data in [Vec::new(), vec![1u8; 1000]] {
            let got = pieces(&data, 100);
            assert_eq!(got.len(), 1);
            assert!(got[0].whole);
            assert_eq!(got[0].plain.as_ref(), data.as_slice());
        }
    }
}
