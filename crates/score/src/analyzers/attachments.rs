//! Attachments: executables, double extensions, macro-enabled office
//! documents, archives carrying executables, content that is not what its
//! name or type says.

use super::{Ctx, Hits};
use crate::symbols::*;

const EXECUTABLE: &[&str] = &[
    "exe",
    "scr",
    "pif",
    "bat",
    "cmd",
    "com",
    "cpl",
    "js",
    "jse",
    "vbs",
    "vbe",
    "wsf",
    "wsh",
    "hta",
    "jar",
    "msi",
    "msp",
    "ps1",
    "lnk",
    "reg",
    "dll",
    "scf",
    "gadget",
    "application",
];
const MACRO_OFFICE: &[&str] = &[
    "docm", "dotm", "xlsm", "xltm", "xlam", "pptm", "potm", "ppam", "ppsm", "sldm",
];
/// Extensions a victim trusts, used as the decoy in `invoice.pdf.exe`.
const DECOY: &[&str] = &[
    "pdf", "doc", "docx", "xls", "xlsx", "ppt", "pptx", "jpg", "jpeg", "png", "gif", "txt", "rtf",
    "zip", "htm", "html", "mp3", "mp4",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    WindowsExecutable,
    Zip,
    Pdf,
    Png,
    Gif,
    Jpeg,
    Ole,
}

fn sniff(bytes: &[u8]) -> Option<Kind> {
    Some(match bytes {
        [b'M', b'Z', ..] => Kind::WindowsExecutable,
        [b'P', b'K', 3, 4, ..] => Kind::Zip,
        [b'%', b'P', b'D', b'F', ..] => Kind::Pdf,
        [0x89, b'P', b'N', b'G', ..] => Kind::Png,
        [b'G', b'I', b'F', b'8', ..] => Kind::Gif,
        [0xff, 0xd8, 0xff, ..] => Kind::Jpeg,
        [0xd0, 0xcf, 0x11, 0xe0, ..] => Kind::Ole,
        _ => return None,
    })
}

/// What content an extension promises, when it promises one.
fn expected(ext: &str) -> Option<&'static [Kind]> {
    Some(match ext {
        "pdf" => &[Kind::Pdf],
        "png" => &[Kind::Png],
        "gif" => &[Kind::Gif],
        "jpg" | "jpeg" => &[Kind::Jpeg],
        "zip" | "docx" | "xlsx" | "pptx" | "docm" | "xlsm" | "pptm" | "odt" | "ods" | "jar" => {
            &[Kind::Zip]
        }
        "doc" | "xls" | "ppt" | "msi" => &[Kind::Ole],
        "exe" | "dll" | "scr" | "com" | "cpl" => &[Kind::WindowsExecutable],
        "txt" | "csv" | "htm" | "html" => &[],
        _ => return None,
    })
}

fn extension(name: &str) -> Option<String> {
    let (_, ext) = name.trim().rsplit_once('.')?;
    let ext = ext.trim().to_ascii_lowercase();
    (!ext.is_empty() && ext.len() <= 12).then_some(ext)
}

pub(crate) fn analyze(ctx: &Ctx<'_, '_>, hits: &mut Hits) {
    for attachment in ctx.mail.attachments.iter().take(200) {
        let name = attachment.name.as_deref().unwrap_or("").trim();
        let shown = if name.is_empty() { "(unnamed)" } else { name };
        let ext = extension(name);
        let bytes = ctx.mail.attachment_bytes(attachment);
        let kind = sniff(bytes);

        if let Some(ext) = ext.as_deref() {
            if EXECUTABLE.contains(&ext) {
                hits.add(ATTACH_EXECUTABLE, vec![shown.to_string()]);
                let stem = &name[..name.len() - ext.len() - 1];
                if let Some(inner) = extension(stem.trim_end()) {
                    if DECOY.contains(&inner.as_str()) {
                        hits.add(ATTACH_DOUBLE_EXT, vec![shown.to_string()]);
                    }
                }
                if stem.ends_with("   ") {
                    hits.add(ATTACH_DOUBLE_EXT, vec![format!("{shown} (padded)")]);
                }
            }
            if MACRO_OFFICE.contains(&ext) {
                hits.add(ATTACH_MACRO_OFFICE, vec![shown.to_string()]);
            }
            if let (Some(kind), Some(allowed)) = (kind, expected(ext)) {
                if !allowed.contains(&kind) {
                    hits.add(
                        ATTACH_TYPE_MISMATCH,
                        vec![format!("{shown} is really {kind:?}")],
                    );
                }
            }
        }
        if kind == Some(Kind::WindowsExecutable) {
            hits.add(
                ATTACH_EXECUTABLE,
                vec![format!("{shown} (Windows executable content)")],
            );
            let ct = attachment.content_type.as_str();
            if ct.starts_with("image/") || ct.starts_with("text/") || ct == "application/pdf" {
                hits.add(
                    ATTACH_TYPE_MISMATCH,
                    vec![format!("{shown} declared {ct}, is a Windows executable")],
                );
            }
        }
        if kind == Some(Kind::Ole) && contains(bytes, b"_VBA_PROJECT") {
            hits.add(ATTACH_MACRO_OFFICE, vec![format!("{shown} (VBA project)")]);
        }
        if kind == Some(Kind::Zip) {
            for entry in zip_names(bytes).into_iter().take(10_000) {
                let lower = entry.to_ascii_lowercase();
                if lower.ends_with("vbaproject.bin") {
                    hits.add(
                        ATTACH_MACRO_OFFICE,
                        vec![format!("{shown} (vbaProject.bin)")],
                    );
                }
                if extension(&lower).is_some_and(|e| EXECUTABLE.contains(&e.as_str())) {
                    hits.add(ATTACH_ARCHIVE_EXEC, vec![format!("{shown}: {entry}")]);
                }
            }
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// File names in a zip archive, read from its central directory (no
/// decompression; bounds-checked, so a corrupt archive lists what it can).
fn zip_names(bytes: &[u8]) -> Vec<String> {
    let u16_at = |at: usize| -> Option<usize> {
        bytes
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |at: usize| -> Option<usize> {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    // End of central directory: within the last 64 KiB + 22 bytes.
    let search_from = bytes.len().saturating_sub(65_557);
    let Some(eocd) = (search_from..bytes.len().saturating_sub(21))
        .rev()
        .find(|&i| bytes.get(i..i + 4) == Some(&[b'P', b'K', 5, 6][..]))
    else {
        return Vec::new();
    };
    let (Some(entries), Some(mut at)) = (u16_at(eocd + 10), u32_at(eocd + 16)) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    for _ in 0..entries.min(10_000) {
        if bytes.get(at..at + 4) != Some(&[b'P', b'K', 1, 2][..]) {
            break;
        }
        let (Some(name_len), Some(extra), Some(comment)) =
            (u16_at(at + 28), u16_at(at + 30), u16_at(at + 32))
        else {
            break;
        };
        let Some(name) = bytes.get(at + 46..at + 46 + name_len) else {
            break;
        };
        names.push(String::from_utf8_lossy(name).into_owned());
        at += 46 + name_len + extra + comment;
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored (uncompressed) zip with the given names, built by hand.
    pub(crate) fn zip_with(names: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for name in names {
            let offset = out.len() as u32;
            out.extend_from_slice(b"PK\x03\x04");
            out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&[0; 12]);
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(name.as_bytes());
            central.extend_from_slice(b"PK\x01\x02");
            central.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            central.extend_from_slice(&[0; 12]);
            central.extend_from_slice(&(name.len() as u16).to_le_bytes());
            central.extend_from_slice(&[0; 12]);
            central.extend_from_slice(&offset.to_le_bytes());
            central.extend_from_slice(name.as_bytes());
        }
        let cd_offset = out.len() as u32;
        out.extend_from_slice(&central);
        out.extend_from_slice(b"PK\x05\x06");
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&(names.len() as u16).to_le_bytes());
        out.extend_from_slice(&(names.len() as u16).to_le_bytes());
        out.extend_from_slice(&(central.len() as u32).to_le_bytes());
        out.extend_from_slice(&cd_offset.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out
    }

    #[test]
    fn lists_zip_entries_and_survives_corruption() {
        let zip = zip_with(&["readme.txt", "payload/run.exe"]);
        assert_eq!(zip_names(&zip), vec!["readme.txt", "payload/run.exe"]);
        for cut in 0..zip.len() {
            let _ = zip_names(&zip[..cut]);
        }
        assert!(zip_names(b"PK\x05\x06").is_empty());
    }
}
