use mail_parser::MessageParser;

/// Why a body cannot be accepted as an email at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestRejection {
    #[error("the body is empty; send a raw RFC 5322 message")]
    Empty,
    #[error("the body is not an RFC 5322 message: {0}")]
    NotAnEmail(&'static str),
}

impl IngestRejection {
    /// Stable machine-readable code of the rejection.
    pub fn code(&self) -> &'static str {
        match self {
            IngestRejection::Empty => "empty_body",
            IngestRejection::NotAnEmail(_) => "not_an_email",
        }
    }
}

/// Cheap admission check run before a message is stored: it parses the
/// header block only. A message is admitted when it carries at least one
/// header field that RFC 5322 or MIME defines (From, Date, Subject, Received,
/// Content-Type, ...). Everything else about the message may be broken: the
/// processing stage keeps what it can parse.
pub fn check_ingestible(raw: &[u8]) -> Result<(), IngestRejection> {
    if raw.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(IngestRejection::Empty);
    }
    let first_line_end = raw.iter().position(|&b| b == b'\n').unwrap_or(raw.len());
    let first_line = &raw[..first_line_end];
    if !first_line.contains(&b':')
        || first_line
            .iter()
            .take_while(|&&b| b != b':')
            .any(|&b| !is_field_name_byte(b))
    {
        return Err(IngestRejection::NotAnEmail(
            "the first line is not a header field (`Name: value`)",
        ));
    }
    let parsed = MessageParser::default().parse_headers(raw);
    let has_known_field = parsed
        .as_ref()
        .map(|m| m.headers().iter().any(|h| !h.name.is_other()))
        .unwrap_or(false);
    if has_known_field {
        Ok(())
    } else {
        Err(IngestRejection::NotAnEmail(
            "no standard header field (From, To, Subject, Date, Message-ID, Received, ...) was found",
        ))
    }
}

/// RFC 5322 field names are printable US-ASCII except the colon; we also let
/// through the leading whitespace some exporters leave before the first field.
fn is_field_name_byte(b: u8) -> bool {
    ((33..=126).contains(&b) && b != b':') || b == b' ' || b == b'\t'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_minimal_message() {
        assert_eq!(check_ingestible(b"Subject: hi\r\n\r\nbody"), Ok(()));
        assert_eq!(
            check_ingestible(b"Received: from x\nFrom: a@b.c\n\nbody"),
            Ok(())
        );
    }

    #[test]
    fn rejects_empty_and_garbage() {
        assert_eq!(check_ingestible(b""), Err(IngestRejection::Empty));
        assert_eq!(check_ingestible(b"  \r\n "), Err(IngestRejection::Empty));
        assert!(matches!(
            check_ingestible(b"\x89PNG\r\n\x1a\n\0\0\0"),
            Err(IngestRejection::NotAnEmail(_))
        ));
        assert!(matches!(
            check_ingestible(b"hello world, no headers here\n"),
            Err(IngestRejection::NotAnEmail(_))
        ));
        assert!(matches!(
            check_ingestible(b"X-Only-Custom: 1\n\nbody"),
            Err(IngestRejection::NotAnEmail(_))
        ));
    }

    #[test]
    fn admits_invalid_utf8_headers() {
        assert_eq!(
            check_ingestible(b"Subject: caf\xe9 \xff\xfe\r\nFrom: \xc3\x28@x\r\n\r\nbody"),
            Ok(())
        );
    }
}
