//! Just enough of the ustar format for `kubectl cp`: write an archive of one file, and read the
//! entries of an archive Go's `archive/tar` wrote.

/// An archive that is not one we can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TarError {
    /// The archive ends inside a header or a file.
    #[error("unexpected end of archive")]
    Truncated,
    /// A header's checksum does not match its bytes.
    #[error("header checksum mismatch")]
    Checksum,
    /// A numeric field is not octal.
    #[error("bad numeric field in a header")]
    BadNumber,
}

const BLOCK: usize = 512;

/// One entry of an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) name: String,
    /// `b'0'` for a regular file, `b'5'` for a directory, and so on.
    pub(crate) kind: u8,
    pub(crate) data: Vec<u8>,
}

/// An archive holding one regular file `name` (at most 100 bytes) with `content`.
pub(crate) fn archive_one(name: &str, content: &[u8]) -> Vec<u8> {
    let mut header = [0u8; BLOCK];
    let name = name.as_bytes();
    let name = &name[..name.len().min(100)];
    header[..name.len()].copy_from_slice(name);
    put_octal(&mut header[100..108], 0o644);
    put_octal(&mut header[108..116], 0);
    put_octal(&mut header[116..124], 0);
    put_octal(&mut header[124..136], content.len() as u64);
    put_octal(&mut header[136..148], 0);
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].fill(b' ');
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());

    let mut out = header.to_vec();
    out.extend_from_slice(content);
    out.resize(out.len().next_multiple_of(BLOCK), 0);
    out.extend_from_slice(&[0; 2 * BLOCK]);
    out
}

fn put_octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let digits = format!("{value:0width$o}");
    let digits = &digits.as_bytes()[digits.len().saturating_sub(width)..];
    field[..digits.len()].copy_from_slice(digits);
    field[width] = 0;
}

fn octal(field: &[u8]) -> Result<u64, TarError> {
    let text = field
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| char::from(*b))
        .collect::<String>();
    let text = text.trim();
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8).map_err(|_| TarError::BadNumber)
}

/// The entries of an archive, up to its end marker (or its end). PAX and GNU long-name
/// entries come back as entries of their own kind.
pub(crate) fn entries(mut archive: &[u8]) -> Result<Vec<Entry>, TarError> {
    let mut entries = Vec::new();
    loop {
        let Some(header) = archive.get(..BLOCK) else {
            return if archive.is_empty() {
                Ok(entries)
            } else {
                Err(TarError::Truncated)
            };
        };
        if header.iter().all(|b| *b == 0) {
            return Ok(entries);
        }
        let stored = octal(&header[148..156])?;
        let sum: u64 = header
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(*b)
                }
            })
            .sum();
        if stored != sum {
            return Err(TarError::Checksum);
        }
        let size = usize::try_from(octal(&header[124..136])?).map_err(|_| TarError::BadNumber)?;
        let mut name: Vec<u8> = header[..100]
            .iter()
            .copied()
            .take_while(|b| *b != 0)
            .collect();
        if &header[257..262] == b"ustar" && header[345] != 0 {
            let mut prefix: Vec<u8> = header[345..500]
                .iter()
                .copied()
                .take_while(|b| *b != 0)
                .collect();
            prefix.push(b'/');
            prefix.append(&mut name);
            name = prefix;
        }
        let kind = header[156];
        archive = &archive[BLOCK..];
        let padded = size.next_multiple_of(BLOCK);
        let data = archive.get(..size).ok_or(TarError::Truncated)?.to_vec();
        archive = archive.get(padded..).ok_or(TarError::Truncated)?;
        entries.push(Entry {
            name: String::from_utf8_lossy(&name).into_owned(),
            kind: if kind == 0 { b'0' } else { kind },
            data,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_round_trips() {
        let archive = archive_one("tmp/notes.txt", b"hello\n");
        assert_eq!(archive.len() % BLOCK, 0);
        assert_eq!(
            entries(&archive),
            Ok(vec![Entry {
                name: "tmp/notes.txt".into(),
                kind: b'0',
                data: b"hello\n".to_vec()
            }])
        );
    }

    #[test]
    fn damage_is_an_error() {
        let mut archive = archive_one("a", b"x");
        archive[0] = b'b';
        assert_eq!(entries(&archive), Err(TarError::Checksum));
        let archive = archive_one("a", &[7; 600]);
        assert_eq!(entries(&archive[..700]), Err(TarError::Truncated));
        assert_eq!(entries(&archive[..100]), Err(TarError::Truncated));
        assert_eq!(entries(&[]), Ok(vec![]));
    }
}
