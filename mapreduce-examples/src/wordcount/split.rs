//! Splitting text into words, 64 bytes at a time: the tokenizer of the word count job and
//! of its tuned baseline alike.
//!
//! A block's bytes are classified at once into a bit mask of *candidates*: ASCII letters
//! and every non-ASCII byte. Words are then runs of candidates, found from the mask's
//! transitions with `trailing_zeros`, so the loop branches per word, not per byte. A run
//! that holds a non-ASCII byte may still hold a character that is not a letter (a dash, a
//! U+FFFD), so such runs are split again by characters.

use super::is_alphabetic;

const BLOCK: usize = 64;

/// Two masks of `block` (at most 64 bytes; missing bytes count as separators): bit `i`
/// of the first is set where `block[i]` is an ASCII letter or a non-ASCII byte, of the
/// second where it is the first byte of a non-ASCII character. Eight bytes at a time in a
/// `u64` (SWAR), each byte's answer in its top bit, gathered by a multiply.
#[inline(always)]
fn classify(block: &[u8]) -> (u64, u64) {
    let (mut candidates, mut leads) = (0u64, 0u64);
    let mut chunks = block.chunks_exact(8);
    let mut shift = 0;
    for chunk in &mut chunks {
        let (c, l) = classify8(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        candidates |= c << shift;
        leads |= l << shift;
        shift += 8;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        // The last few bytes, zero-padded: zero is a separator. No call to `memcpy`.
        let x = rest.iter().rev().fold(0u64, |x, &b| (x << 8) | u64::from(b));
        let (c, l) = classify8(x);
        candidates |= c << shift;
        leads |= l << shift;
    }
    (candidates, leads)
}

/// [`classify`] for the eight bytes of `x`, little-endian.
#[inline(always)]
fn classify8(x: u64) -> (u64, u64) {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let ones = |b: u8| u64::from_ne_bytes([b; 8]);
    // Top bit of byte k moves to bit 56 + k; the partial products do not collide.
    let gather = |bits: u64| ((bits >> 7).wrapping_mul(0x0102_0408_1020_4080)) >> 56;
    // Lower-cased, top bit cleared: no byte's sum below carries into the next.
    let y = (x | ones(0x20)) & LOW7;
    let at_least_a = y + ones(0x80 - b'a');
    let past_z = y + ones(0x80 - b'z' - 1);
    let letters = at_least_a & !past_z & HIGH;
    // A lead byte is 0b11xx_xxxx: the top bit, and the next one shifted up to it.
    (gather(letters | (x & HIGH)), gather(x & (x << 1) & HIGH))
}

/// Calls `f` with every word of `text` in order: exactly the words of
/// [`words`](super::words), maximal runs of alphabetic characters.
#[inline]
pub fn for_each_word<'t>(text: &'t str, mut f: impl FnMut(&'t str)) {
    let bytes = text.as_bytes();
    // The run of candidates under way, if `in_run`: where it started, and whether its
    // part in earlier blocks holds a character that is not a known letter.
    let (mut start, mut in_run, mut run_unsure) = (0usize, false, false);
    let mut carry = 0u64;
    let mut base = 0;
    // Missing bytes count as separators, so a run that goes on to the end of the text
    // ends in its last, partial block; if the text fills its last block, one more, empty,
    // block ends it. Words are handed to `f` from one place, so that it is inlined here.
    while base <= bytes.len() {
        let (mask, leads) = classify(&bytes[base..bytes.len().min(base + BLOCK)]);
        // Non-ASCII characters that are not known letters: their words are split closer.
        let mut unsure = 0u64;
        let mut rest = leads;
        while rest != 0 {
            let i = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            let at = base + i;
            let letter = european_letter(bytes[at], bytes.get(at + 1).copied().unwrap_or(0));
            unsure |= u64::from(!letter) << i;
        }
        // Bit i of `edges` is set where byte i starts or ends a run.
        let mut edges = mask ^ ((mask << 1) | carry);
        carry = mask >> 63;
        while edges != 0 {
            let i = edges.trailing_zeros() as usize;
            edges &= edges - 1;
            if in_run {
                let word = &text[start..base + i];
                if !run_unsure && (unsure & ((1u64 << i) - 1)) >> start.saturating_sub(base) == 0 {
                    f(word);
                } else {
                    split_mixed(word, &mut f);
                }
            } else {
                start = base + i;
                run_unsure = false;
            }
            in_run = !in_run;
        }
        if in_run {
            run_unsure |= unsure >> start.saturating_sub(base) != 0;
        }
        base += BLOCK;
    }
    debug_assert!(!in_run, "the last block ends every run");
}

/// Whether the character starting with the bytes `lead, next` is a Latin (U+00C0 to
/// U+024F but × and ÷) or Cyrillic (U+0400 to U+052F but U+0482 to U+0489) letter, as
/// [`is_alphabetic`] says; `false` means "look closer", not "not a letter". A table
/// lookup, not a branch: the scripts of a text come in no predictable order.
#[inline(always)]
fn european_letter(lead: u8, next: u8) -> bool {
    // A two-byte character `110x_xxxx 10yy_yyyy` is code point `x_xxxx_yy_yyyy`.
    let two_bytes = lead & 0xe0 == 0xc0;
    let code = (usize::from(lead & 0x1f) << 6) | usize::from(next & 0x3f);
    two_bytes && LETTERS_BELOW_0800[code >> 6] >> (code & 63) & 1 == 1
}

/// Bit `c` is set for the code points `c` below U+0800 that [`european_letter`] knows
/// to be letters.
const LETTERS_BELOW_0800: [u64; 32] = {
    let mut bits = [0u64; 32];
    let mut c = 0;
    while c < 0x800 {
        let latin = c >= 0xc0 && c <= 0x24f && c != 0xd7 && c != 0xf7;
        let cyrillic = c >= 0x400 && c <= 0x52f && !(c >= 0x482 && c <= 0x489);
        if latin || cyrillic {
            bits[c >> 6] |= 1 << (c & 63);
        }
        c += 1;
    }
    bits
};

/// The words of a run that holds a character [`european_letter`] does not know, found
/// character by character. Out of line and through `dyn`: rare, and the caller's `f` is
/// then called directly from one place only.
#[inline(never)]
fn split_mixed<'t>(run: &'t str, f: &mut dyn FnMut(&'t str)) {
    let mut start = None;
    for (i, c) in run.char_indices() {
        match (is_alphabetic(c), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                f(&run[s..i]);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        f(&run[s..]);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::wordcount::words;

    fn split(text: &str) -> Vec<&str> {
        let mut got = Vec::new();
        for_each_word(text, |w| got.push(w));
        got
    }

    #[test]
    fn splits_like_words_at_block_edges() {
        // Words and separators of every length around the 64-byte block edges.
        for len in 0..200 {
            for offset in 0..3 {
                let text: String = (0..len).map(|i| if (i + offset) % 7 < 5 { 'a' } else { ' ' }).collect();
                assert_eq!(split(&text), words(&text).collect::<Vec<_>>(), "{text:?}");
                let text: String = (0..len).map(|i| if (i + offset) % 9 == 0 { '—' } else { 'é' }).collect();
                assert_eq!(split(&text), words(&text).collect::<Vec<_>>(), "{text:?}");
            }
        }
    }

    #[test]
    fn mixed_runs_split_at_characters_that_are_not_letters() {
        let text = "Hello, wörld! it's 42x ß-Straße\u{fffd}ok caf\u{e9}\u{2014}bar \u{d7}\u{f7} 日本語 x\u{300}y";
        assert_eq!(split(text), words(text).collect::<Vec<_>>());
    }

    proptest! {
        #[test]
        fn agrees_with_words(text in "(?s)[a-zA-Z0-9 ,.\\-\n\u{e9}\u{df}\u{436}\u{2014}\u{fffd}\u{d7}\u{1f600}]{0,300}") {
            prop_assert_eq!(split(&text), words(&text).collect::<Vec<_>>());
        }

        #[test]
        fn agrees_with_words_on_any_text(text in any::<String>()) {
            prop_assert_eq!(split(&text), words(&text).collect::<Vec<_>>());
        }
    }
}
