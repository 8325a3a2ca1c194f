//! Content-defined chunks of a document: FastCDC (2020) finds cut points from the bytes
//! themselves, so an edit moves only the cuts near it and consecutive backups of a growing log
//! share all their chunks but the last one or two. Cuts fall only between UTF-8 characters,
//! so every chunk is text of its own (stored and dumped as text, never hex).
//!
//! The sizes were measured (`examples/chunk_sizes.rs` over `bench/histories.py`, in
//! bench/README.md): of 4, 8, 16 and 32 KiB, 8 KiB kept a user's 30 backups smallest for
//! 400 KiB and 1 MiB logs, at about 120 chunks a 1 MiB document.

use fastcdc::v2020::FastCDC;

/// No chunk is shorter, but the last.
pub const MIN_CHUNK_BYTES: usize = 2 * 1024;
/// What chunks average.
pub const AVERAGE_CHUNK_BYTES: usize = 8 * 1024;
/// No chunk is longer (but for the up to three bytes that finish a character).
pub const MAX_CHUNK_BYTES: usize = 32 * 1024;

/// The chunks of `document`, in order; together they are the document. None for an empty one.
pub fn chunks(document: &str) -> impl Iterator<Item = &str> {
    let bytes = document.as_bytes();
    let chunker = FastCDC::new(bytes, MIN_CHUNK_BYTES, AVERAGE_CHUNK_BYTES, MAX_CHUNK_BYTES);
    let mut start = 0;
    std::iter::from_fn(move || {
        if start == bytes.len() {
            return None;
        }
        let (_, mut end) = chunker.cut(start, bytes.len() - start);
        // Forward to the end of the character the cut fell in: deterministic, and never back
        // below the minimum.
        while !document.is_char_boundary(end) {
            end += 1;
        }
        let chunk = &document[start..end];
        start = end;
        Some(chunk)
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A JSON-ish log of `n` entries, with characters of every UTF-8 length.
    fn log(n: usize) -> String {
        (0..n).map(|i| format!(r#"{{"i":{i},"note":"set {i} ✓ — ünï 💪","reps":{}}},"#, i % 13)).collect()
    }

    #[test]
    fn chunks_are_the_document_in_order_and_within_bounds() {
        let document = log(20_000);
        let chunks: Vec<&str> = chunks(&document).collect();
        assert_eq!(chunks.concat(), document);
        assert!(chunks.len() > 20, "{} chunks of {} bytes", chunks.len(), document.len());
        let (last, rest) = chunks.split_last().unwrap();
        assert!(rest.iter().all(|c| (MIN_CHUNK_BYTES..=MAX_CHUNK_BYTES + 3).contains(&c.len())));
        assert!(last.len() <= MAX_CHUNK_BYTES + 3);
        let average = document.len() / chunks.len();
        assert!((AVERAGE_CHUNK_BYTES / 2..AVERAGE_CHUNK_BYTES * 2).contains(&average), "{average}");
        assert_eq!(super::chunks("").count(), 0);
        assert_eq!(super::chunks("{}").collect::<Vec<_>>(), ["{}"]);
    }

    #[test]
    fn an_append_or_an_edit_changes_only_the_chunks_near_it() {
        let before = log(20_000);
        let old: std::collections::HashSet<&str> = chunks(&before).collect();
        let appended = format!("{before}{}", log(30));
        let new: Vec<&str> = chunks(&appended).collect();
        let fresh = new.iter().filter(|c| !old.contains(*c)).count();
        assert!(fresh <= 2, "{fresh} of {} chunks new after an append", new.len());

        let middle = before.len() / 2;
        let at = (middle..).find(|i| before.is_char_boundary(*i)).unwrap();
        let edited = format!("{}{{\"edited\":true}}{}", &before[..at], &before[at..]);
        let new: Vec<&str> = chunks(&edited).collect();
        let fresh = new.iter().filter(|c| !old.contains(*c)).count();
        assert!(fresh <= 3, "{fresh} of {} chunks new after an edit in the middle", new.len());
    }

    proptest! {
        #[test]
        fn any_text_chunks_back_into_itself(text in "\\PC{0,3000}", repeat in 1usize..40) {
            let document = text.repeat(repeat);
            let chunks: Vec<&str> = chunks(&document).collect();
            prop_assert_eq!(chunks.concat(), document.as_str());
            prop_assert!(chunks.iter().all(|c| !c.is_empty()));
        }
    }
}
