//! The proxy-wasm wire format of a header map: u32 count, count × (u32 name length, u32 value
//! length), then each name and each value followed by a NUL, all little-endian. The host writes it
//! for reads of a whole map and the module writes it for the headers of a call it dispatches.

/// A map the host wrote that does not follow the format (truncated, lengths past the end, a name
/// that is not UTF-8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// Reads a serialized map without copying: names and values borrow from `bytes`. An empty buffer
/// is an empty map (the host's answer for a map without entries).
pub fn parse(bytes: &[u8]) -> Result<Vec<(&str, &[u8])>, Malformed> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let word = |at: usize| -> Result<usize, Malformed> {
        let b = bytes
            .get(at..at.checked_add(4).ok_or(Malformed)?)
            .ok_or(Malformed)?;
        let b: [u8; 4] = b.try_into().map_err(|_| Malformed)?;
        Ok(u32::from_le_bytes(b) as usize)
    };
    let count = word(0)?;
    // Each entry takes at least 10 bytes (two lengths, two NULs): a larger count is a lie, and
    // believing it would reserve memory for it.
    if count > bytes.len() / 10 {
        return Err(Malformed);
    }
    let mut at = 4 + count * 8;
    let mut take = |len: usize| -> Result<&[u8], Malformed> {
        let end = at.checked_add(len).ok_or(Malformed)?;
        let field = bytes.get(at..end).ok_or(Malformed)?;
        if bytes.get(end) != Some(&0) {
            return Err(Malformed);
        }
        at = end + 1;
        Ok(field)
    };
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let (name_len, value_len) = (word(4 + i * 8)?, word(8 + i * 8)?);
        let name = std::str::from_utf8(take(name_len)?).map_err(|_| Malformed)?;
        out.push((name, take(value_len)?));
    }
    Ok(out)
}

pub fn serialize(pairs: &[(&str, &str)]) -> Vec<u8> {
    let size: usize = 4 + pairs
        .iter()
        .map(|(k, v)| 10 + k.len() + v.len())
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let rows: &[&[(&str, &str)]] = &[
            &[],                                          // no entries: count 0
            &[(":path", "/")],                            // one entry
            &[("a", ""), ("", "b"), ("x-b3-flags", "1")], // empty names and values
        ];
        for (i, pairs) in rows.iter().enumerate() {
            let bytes = serialize(pairs);
            let got = parse(&bytes).unwrap();
            let want: Vec<(&str, &[u8])> = pairs.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
            assert_eq!(got, want, "row {i}");
        }
        assert_eq!(parse(&[]).unwrap(), vec![], "empty buffer");
    }

    #[test]
    fn refuses_malformed_maps() {
        let good = serialize(&[("name", "value"), ("k", "v")]);
        let mut not_nul = good.clone();
        let last = not_nul.len() - 1;
        not_nul[last] = b'x';
        let mut huge_len = good.clone();
        huge_len[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut bad_utf8 = serialize(&[("nm", "v")]);
        bad_utf8[12] = 0xff;
        let rows: &[(&str, Vec<u8>)] = &[
            ("truncated by one byte", good[..good.len() - 1].to_vec()),
            ("truncated inside the lengths", good[..9].to_vec()),
            ("shorter than a count", vec![1, 0]),
            (
                "count larger than the buffer allows",
                1000u32.to_le_bytes().to_vec(),
            ),
            ("count u32::MAX", u32::MAX.to_le_bytes().repeat(4)),
            ("a value without its NUL", not_nul),
            ("a length past the end", huge_len),
            ("a name that is not UTF-8", bad_utf8),
        ];
        for (what, bytes) in rows {
            assert_eq!(parse(bytes), Err(Malformed), "{what}");
        }
    }

    #[test]
    fn values_need_not_be_utf8() {
        let mut bytes = serialize(&[("k", "vv")]);
        bytes[15] = 0xfe;
        assert_eq!(parse(&bytes).unwrap(), vec![("k", &[b'v', 0xfe][..])]);
    }
}
