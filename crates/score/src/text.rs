//! Text helpers shared by analyzers and the feature extractor.

/// Folds characters that look alike (Cyrillic and Greek homoglyphs, digits
/// used as letters, `rn` for `m`) so `pаypa1` and `paypal` compare equal.
pub fn skeleton(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let mapped = match c {
            'а' | 'α' | '@' | 'А' => 'a',
            'е' | 'ε' | '3' | 'Е' => 'e',
            'о' | 'ο' | '0' | 'О' | 'σ' => 'o',
            'р' | 'ρ' | 'Р' => 'p',
            'с' | 'С' | 'ϲ' => 'c',
            'у' | 'У' => 'y',
            'х' | 'Х' | 'χ' => 'x',
            // 'l' and 'i' are the classic pair: both fold to 'l'.
            'і' | 'ι' | '1' | '!' | '|' | 'І' | 'ӏ' | 'i' | 'I' => 'l',
            'ј' => 'j',
            'ԁ' => 'd',
            'ѕ' | '5' | '$' => 's',
            'ν' => 'v',
            'к' | 'κ' => 'k',
            'т' => 't',
            'м' => 'm',
            'н' => 'h',
            'в' => 'b',
            c if c.is_ascii() => c.to_ascii_lowercase(),
            c => c.to_lowercase().next().unwrap_or(c),
        };
        // The digraphs, folded as they complete: `rn` reads as `m`, `vv` as `w`.
        match (out.as_bytes().last(), mapped) {
            (Some(b'r'), 'n') => {
                out.pop();
                out.push('m');
            }
            (Some(b'v'), 'v') => {
                out.pop();
                out.push('w');
            }
            _ => out.push(mapped),
        }
    }
    out
}

/// Longest label compared by [`edit_distance`].
const MAX_EDIT_CHARS: usize = 64;

/// Levenshtein distance, giving up (returning `max + 1`) once it exceeds
/// `max`; inputs are domain labels, so the table is two short rows on the
/// stack.
pub fn edit_distance(a: &str, b: &str, max: usize) -> usize {
    let mut a_chars = ['\0'; MAX_EDIT_CHARS];
    let mut b_chars = ['\0'; MAX_EDIT_CHARS];
    let fill = |s: &str, into: &mut [char; MAX_EDIT_CHARS]| {
        let mut n = 0usize;
        for (slot, c) in into.iter_mut().zip(s.chars()) {
            *slot = c;
            n += 1;
        }
        n
    };
    let (a_len, b_len) = (fill(a, &mut a_chars), fill(b, &mut b_chars));
    if a_len.abs_diff(b_len) > max {
        return max + 1;
    }
    let (a, b) = (&a_chars[..a_len], &b_chars[..b_len]);
    let mut prev = [0usize; MAX_EDIT_CHARS + 1];
    let mut cur = [0usize; MAX_EDIT_CHARS + 1];
    for (j, slot) in prev.iter_mut().enumerate().take(b.len() + 1) {
        *slot = j;
    }
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        let mut row_min = cur[0];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
            row_min = row_min.min(cur[j + 1]);
        }
        if row_min > max {
            return max + 1;
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200b}' | '\u{200c}' | '\u{200d}' | '\u{2060}' | '\u{feff}' | '\u{00ad}' | '\u{180e}'
    )
}

pub fn is_cyrillic_or_greek(c: char) -> bool {
    matches!(c, '\u{0370}'..='\u{03ff}' | '\u{0400}'..='\u{04ff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skeletons_fold_homoglyphs() {
        assert_eq!(skeleton("pаypa1"), skeleton("paypal"));
        assert_eq!(skeleton("rnicrosoft"), skeleton("microsoft"));
        assert_ne!(skeleton("paypal"), skeleton("payment"));
    }

    #[test]
    fn edit_distance_is_bounded() {
        assert_eq!(edit_distance("paypal", "paypall", 2), 1);
        assert_eq!(edit_distance("amazon", "amazom", 2), 1);
        assert_eq!(edit_distance("a", "abcdefgh", 2), 3);
    }
}
