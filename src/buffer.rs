//! Large byte buffers (a request body as read, an event payload read back for delivery) in
//! anonymous memory of their own, so that freeing one gives its memory back to the system
//! at once; from the allocator, memory freed is kept for reuse for a while, and a peak of
//! large bodies would stay resident after they are gone. Small buffers stay on the heap.

use bytes::{Bytes, BytesMut};
use memmap2::MmapMut;

/// Buffers at least this large are mapped on their own.
pub const MAPPED_MIN: usize = 4 * 1024 * 1024;

/// A growable byte buffer, on the heap or mapped.
pub enum Buffer {
    /// A small buffer.
    Heap(BytesMut),
    /// A large one: its first `len` bytes are filled.
    Mapped {
        /// The mapping (its length is the capacity).
        map: MmapMut,
        /// Bytes filled.
        len: usize,
    },
}

impl Buffer {
    /// An empty buffer for about `capacity` bytes; mapped when that is large (on the heap
    /// if the system refuses the mapping).
    pub fn with_capacity(capacity: usize) -> Buffer {
        if capacity >= MAPPED_MIN {
            if let Ok(map) = MmapMut::map_anon(capacity) {
                return Buffer::Mapped { map, len: 0 };
            }
        }
        Buffer::Heap(BytesMut::with_capacity(capacity))
    }

    /// `len` zero bytes, to be overwritten through [`Buffer::filled_mut`].
    pub fn zeroed(len: usize) -> Buffer {
        let mut buffer = Buffer::with_capacity(len);
        match &mut buffer {
            Buffer::Heap(bytes) => bytes.resize(len, 0),
            // a fresh anonymous mapping reads as zeros
            Buffer::Mapped { len: filled, .. } => *filled = len,
        }
        buffer
    }

    /// Bytes filled.
    pub fn len(&self) -> usize {
        match self {
            Buffer::Heap(bytes) => bytes.len(),
            Buffer::Mapped { len, .. } => *len,
        }
    }

    /// Nothing filled yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The filled bytes.
    pub fn filled_mut(&mut self) -> &mut [u8] {
        match self {
            Buffer::Heap(bytes) => bytes,
            Buffer::Mapped { map, len } => &mut map[..*len],
        }
    }

    /// Appends `data`, moving to a larger buffer (twice the size) when it is full.
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        match self {
            Buffer::Heap(bytes) => {
                if bytes.len() + data.len() > bytes.capacity()
                    && bytes.len() + data.len() >= MAPPED_MIN
                {
                    let mut bigger = Buffer::with_capacity((bytes.len() + data.len()) * 2);
                    bigger.extend_from_slice(bytes);
                    bigger.extend_from_slice(data);
                    *self = bigger;
                } else {
                    bytes.extend_from_slice(data);
                }
            }
            Buffer::Mapped { map, len } => {
                let end = *len + data.len();
                if end > map.len() {
                    let mut bigger = Buffer::with_capacity(end.max(map.len() * 2));
                    bigger.extend_from_slice(&map[..*len]);
                    bigger.extend_from_slice(data);
                    *self = bigger;
                } else {
                    map[*len..end].copy_from_slice(data);
                    *len = end;
                }
            }
        }
    }

    /// The filled bytes, shared without a copy; a mapping is unmapped when the last
    /// [`Bytes`] of it is dropped.
    pub fn freeze(self) -> Bytes {
        match self {
            Buffer::Heap(bytes) => bytes.freeze(),
            Buffer::Mapped { map, len } => Bytes::from_owner(map).slice(..len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_buffers_stay_on_the_heap_and_large_ones_are_mapped() {
        assert!(matches!(Buffer::with_capacity(1024), Buffer::Heap(_)));
        assert!(matches!(
            Buffer::with_capacity(MAPPED_MIN),
            Buffer::Mapped { .. }
        ));
        let mut zeroed = Buffer::zeroed(MAPPED_MIN + 1);
        assert_eq!(zeroed.len(), MAPPED_MIN + 1);
        assert!(zeroed.filled_mut().iter().all(|b| *b == 0));
        zeroed.filled_mut()[MAPPED_MIN] = 7;
        let frozen = zeroed.freeze();
        assert_eq!(frozen.len(), MAPPED_MIN + 1);
        assert_eq!(frozen[MAPPED_MIN], 7);
        assert_eq!(Buffer::zeroed(10).freeze(), Bytes::from(vec![0; 10]));
    }

    #[test]
    fn growing_keeps_every_byte_in_order() {
        // from the heap into a mapping, then a mapping into a larger one
        let chunk: Vec<u8> = (0..=255u8).cycle().take(1_000_003).collect();
        let mut buffer = Buffer::with_capacity(16);
        let mut expected = Vec::new();
        for _ in 0..10 {
            buffer.extend_from_slice(&chunk);
            expected.extend_from_slice(&chunk);
        }
        assert!(matches!(buffer, Buffer::Mapped { .. }));
        assert!(!buffer.is_empty());
        assert_eq!(buffer.freeze(), Bytes::from(expected));
    }
}
