//! The byte formats the proxy-wasm ABI passes through memory: header maps and property paths.

/// One header (or metadata) entry. Bytes, not strings: the data-fault cases need non-UTF-8 values.
pub type Pair = (Vec<u8>, Vec<u8>);

pub fn pairs(list: &[(&str, &str)]) -> Vec<Pair> {
    list.iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

/// u32 LE count, count × (u32 key_len, u32 value_len), then every key and value NUL-terminated.
pub fn serialize(pairs: &[Pair]) -> Vec<u8> {
    let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// The inverse of [`serialize`], strict: the module's own serialization must be well formed.
pub fn deserialize(bytes: &[u8]) -> Result<Vec<Pair>, String> {
    let word = |at: usize| -> Result<usize, String> {
        let b = bytes
            .get(at..at + 4)
            .ok_or_else(|| format!("header map ends inside the size table at byte {at}"))?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let count = word(0)?;
    let mut sizes = Vec::with_capacity(count.min(1024));
    for i in 0..count {
        sizes.push((word(4 + i * 8)?, word(8 + i * 8)?));
    }
    let mut at = 4 + count * 8;
    let mut take = |len: usize| -> Result<Vec<u8>, String> {
        let s = bytes
            .get(at..at + len)
            .ok_or_else(|| format!("header map ends inside a string at byte {at}"))?
            .to_vec();
        if bytes.get(at + len) != Some(&0) {
            return Err(format!(
                "header map string at byte {at} is not NUL-terminated"
            ));
        }
        at += len + 1;
        Ok(s)
    };
    let mut out = Vec::with_capacity(sizes.len());
    for (klen, vlen) in sizes {
        let k = take(klen)?;
        let v = take(vlen)?;
        out.push((k, v));
    }
    Ok(out)
}

/// Property paths arrive as NUL-separated segments; a trailing NUL is tolerated (some SDKs send one).
pub fn property_key(raw: &[u8]) -> Vec<u8> {
    raw.strip_suffix(&[0]).unwrap_or(raw).to_vec()
}

pub fn path(segments: &[&str]) -> Vec<u8> {
    segments.join("\0").into_bytes()
}

pub fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
