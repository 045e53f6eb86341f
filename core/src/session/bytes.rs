//! Text of many parts in one fixed buffer, each part stored at its real length.
//!
//! A part holds up to [`crate::wire::frame::MAX_PAYLOAD`] bytes but a chat line is usually a
//! few dozen: a slot of the largest size per part would make a small board pay ~1 KiB for
//! every part in flight. [`ByteQueue`] packs the parts' bytes one after the other instead;
//! the session keeps, beside it, each part's length in part order.
//!
//! Why not `heapless::Deque<u8, N>`: a part must be one contiguous slice (it is written
//! into a frame, and a whole message is handed out as one `&str`), and the receiver inserts
//! a part that arrived out of order between parts it holds. `bbqueue`'s framed mode is
//! contiguous but is a single-producer/single-consumer queue with no insertion. This is a
//! plain buffer that moves bytes when it must: parts leave from the front, so the live bytes
//! are slid back to the start only when a new part would not fit at the end.

/// Bytes kept in order in a buffer of `N`; see the module docs.
#[derive(Debug)]
pub(crate) struct ByteQueue<const N: usize> {
    buf: [u8; N],
    /// Index of the first live byte.
    start: usize,
    /// Index past the last live byte; `start <= end <= N`.
    end: usize,
}

impl<const N: usize> ByteQueue<N> {
    pub(crate) const fn new() -> Self {
        ByteQueue {
            buf: [0; N],
            start: 0,
            end: 0,
        }
    }

    /// Bytes held.
    pub(crate) fn len(&self) -> usize {
        self.end - self.start
    }

    /// Bytes that can still be inserted.
    pub(crate) fn free(&self) -> usize {
        N - self.len()
    }

    /// Insert `bytes` `at` bytes from the front, after moving what follows. Returns `false`,
    /// changing nothing, when there is no room or `at` is past the end.
    pub(crate) fn insert(&mut self, at: usize, bytes: &[u8]) -> bool {
        if at > self.len() || bytes.len() > self.free() {
            return false;
        }
        if self.end + bytes.len() > N {
            // Slide the live bytes to the start; they fit with `bytes` after them.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let at = self.start + at;
        self.buf.copy_within(at..self.end, at + bytes.len());
        self.buf[at..at + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
        true
    }

    /// Append `bytes`; `false`, changing nothing, when there is no room.
    pub(crate) fn push_back(&mut self, bytes: &[u8]) -> bool {
        self.insert(self.len(), bytes)
    }

    /// Drop the first `n` bytes (all of them if there are fewer).
    pub(crate) fn pop_front(&mut self, n: usize) {
        self.start += n.min(self.len());
        if self.start == self.end {
            // Empty: start over at the beginning, so the next parts need no sliding.
            self.start = 0;
            self.end = 0;
        }
    }

    /// Keep only the first `len` bytes.
    pub(crate) fn truncate(&mut self, len: usize) {
        self.end = self.start + len.min(self.len());
        self.pop_front(0);
    }

    /// The `len` bytes `at` bytes from the front, cut short at the end of what is held.
    pub(crate) fn get(&self, at: usize, len: usize) -> &[u8] {
        let from = self.start + at.min(self.len());
        let to = from + len.min(self.end - from);
        &self.buf[from..to]
    }
}

#[cfg(test)]
mod tests {
    use super::ByteQueue;

    fn all<const N: usize>(q: &ByteQueue<N>) -> &[u8] {
        q.get(0, q.len())
    }

    #[test]
    fn parts_go_in_at_the_back_and_leave_from_the_front() {
        let mut q = ByteQueue::<8>::new();
        assert!(q.push_back(b"abc"));
        assert!(q.push_back(b"de"));
        assert_eq!(all(&q), b"abcde");
        assert_eq!(q.get(3, 2), b"de");
        q.pop_front(3);
        assert_eq!(all(&q), b"de");
        assert_eq!(q.free(), 6);
    }

    #[test]
    fn a_part_that_does_not_fit_at_the_end_slides_the_rest_back() {
        let mut q = ByteQueue::<8>::new();
        assert!(q.push_back(b"abcdef"));
        q.pop_front(4);
        // Six free bytes, but only two after the end: the live "ef" moves to the start.
        assert!(q.push_back(b"ghijkl"));
        assert_eq!(all(&q), b"efghijkl");
        assert!(!q.push_back(b"m"), "full");
        assert_eq!(all(&q), b"efghijkl", "a refused part changes nothing");
    }

    #[test]
    fn insertion_between_parts_moves_what_follows() {
        let mut q = ByteQueue::<16>::new();
        assert!(q.push_back(b"aaa"));
        assert!(q.push_back(b"ccc"));
        assert!(q.insert(3, b"bb"));
        assert_eq!(all(&q), b"aaabbccc");
        assert!(!q.insert(9, b"x"), "past the end");
        q.truncate(5);
        assert_eq!(all(&q), b"aaabb");
        q.pop_front(100);
        assert_eq!(q.len(), 0);
        assert_eq!(q.get(3, 4), b"");
    }

    #[test]
    fn reads_past_the_end_are_cut_short() {
        let mut q = ByteQueue::<4>::new();
        assert!(q.push_back(b"ab"));
        assert_eq!(q.get(1, 10), b"b");
        assert_eq!(q.get(7, 1), b"");
        q.pop_front(2);
        assert!(q.push_back(b"wxyz"));
        assert!(!q.insert(0, b"v"));
    }
}
