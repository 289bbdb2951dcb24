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
            'і' | 'ι' | '1' | '!' | '|' | 'І' | 'ӏ' => 'l',
            'ј' => 'j',
            'ԁ' => 'd',
            'ѕ' | '5' | '$' => 's',
            'ν' => 'v',
            'к' | 'κ' => 'k',
            'т' => 't',
            'м' => 'm',
            'н' => 'h',
            'в' => 'b',
            c => c.to_lowercase().next().unwrap_or(c),
        };
        out.push(mapped);
    }
    // 'l' and 'i' are the classic pair; fold them too, then the digraphs.
    out.replace('i', "l").replace("rn", "m").replace("vv", "w")
}

/// Levenshtein distance, giving up (returning `max + 1`) once it exceeds
/// `max`; inputs are domain labels, so the quadratic table is tiny.
pub fn edit_distance(a: &str, b: &str, max: usize) -> usize {
    let a: Vec<char> = a.chars().take(64).collect();
    let b: Vec<char> = b.chars().take(64).collect();
    if a.len().abs_diff(b.len()) > max {
        return max + 1;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
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
