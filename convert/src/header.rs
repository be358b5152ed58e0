//! safetensors headers: a validating parser (every offset, size and dtype is checked, with
//! overflow-safe arithmetic, before any tensor byte is touched) and the writer's serializer.
//!
//! File layout (the safetensors spec): 8 bytes little-endian header length `n`, `n` bytes of
//! JSON `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}`, then
//! the data; offsets are relative to the data start, and the tensors tile the data exactly.

use crate::error::ConvertError;
use safetensors::Dtype;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

/// Largest header accepted (the safetensors crate's own limit).
pub const MAX_HEADER_LEN: u64 = 100_000_000;
/// The metadata key of the header.
pub const METADATA_KEY: &str = "__metadata__";

/// One tensor of a header; offsets are absolute positions in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorEntry {
    /// The tensor name.
    pub name: String,
    /// Its dtype.
    pub dtype: Dtype,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Absolute byte offset of the tensor's first byte in the file.
    pub offset: u64,
    /// Bytes of data.
    pub len: usize,
}

impl TensorEntry {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A parsed, validated header.
#[derive(Debug, Clone, Default)]
pub struct Header {
    /// In file order.
    pub entries: Vec<TensorEntry>,
    /// The `__metadata__` entries.
    pub metadata: BTreeMap<String, String>,
    /// Absolute offset of the data section.
    pub data_start: u64,
}

/// Bits of one element; only whole-byte dtypes are supported.
pub fn dtype_bytes(dtype: Dtype) -> Option<usize> {
    let bits = dtype.bitsize();
    (bits % 8 == 0).then_some(bits / 8)
}

/// The safetensors name of a dtype (`"BF16"`).
pub fn dtype_name(dtype: Dtype) -> String {
    dtype.to_string()
}

/// Reads and validates the header of an open safetensors file.
pub fn read_header(file: &mut File, path: &Path) -> Result<Header, ConvertError> {
    let file_len = file
        .metadata()
        .map_err(|e| ConvertError::io(path, e))?
        .len();
    if file_len < 8 {
        return Err(ConvertError::header(
            path,
            format!("file is {file_len} bytes, shorter than the 8-byte header length"),
        ));
    }
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes)
        .map_err(|e| ConvertError::io(path, e))?;
    let n = u64::from_le_bytes(len_bytes);
    check_header_len(n, file_len, path)?;
    let mut json = vec![0u8; n as usize];
    file.read_exact(&mut json)
        .map_err(|e| ConvertError::io(path, e))?;
    parse_header(&json, file_len, path)
}

/// Validates a whole safetensors file held in memory (used by tests and fuzzing).
pub fn parse_file_bytes(bytes: &[u8], path: &Path) -> Result<Header, ConvertError> {
    let file_len = bytes.len() as u64;
    let Some(len_bytes) = bytes.get(..8) else {
        return Err(ConvertError::header(
            path,
            format!("file is {file_len} bytes, shorter than the 8-byte header length"),
        ));
    };
    let n = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
    check_header_len(n, file_len, path)?;
    parse_header(&bytes[8..8 + n as usize], file_len, path)
}

fn check_header_len(n: u64, file_len: u64, path: &Path) -> Result<(), ConvertError> {
    let first = n.to_le_bytes();
    let looks_like_text = first
        .iter()
        .all(|&b| b.is_ascii_graphic() || b.is_ascii_whitespace());
    if looks_like_text && (n > MAX_HEADER_LEN || n > file_len - 8) {
        // A safetensors file starts with a little-endian length whose high bytes are zero.
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        return Err(ConvertError::NotACheckpoint {
            path: path.to_path_buf(),
            reason: format!(
                "a text file (it starts with '{}'), not a safetensors file, which starts with \
                 an 8-byte header length; pass the checkpoint directory ({}) or its \
                 .safetensors file",
                char::from(first[0]).escape_default(),
                dir.display()
            ),
        });
    }
    if n > MAX_HEADER_LEN {
        return Err(ConvertError::header(
            path,
            format!("header length {n} exceeds the {MAX_HEADER_LEN}-byte limit"),
        ));
    }
    if n > file_len - 8 {
        return Err(ConvertError::header(
            path,
            format!("header length {n} runs past the end of the {file_len}-byte file (truncated?)"),
        ));
    }
    Ok(())
}

/// Parses the JSON header of a file of `file_len` bytes and checks every entry against it.
pub fn parse_header(json: &[u8], file_len: u64, path: &Path) -> Result<Header, ConvertError> {
    let data_start = 8 + json.len() as u64;
    let data_len = file_len
        .checked_sub(data_start)
        .ok_or_else(|| ConvertError::header(path, "header runs past the end of the file"))?;
    let text = std::str::from_utf8(json)
        .map_err(|e| ConvertError::header(path, format!("header is not UTF-8: {e}")))?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ConvertError::header(path, format!("header is not JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(ConvertError::header(path, "header is not a JSON object"));
    };
    let mut header = Header {
        data_start,
        ..Header::default()
    };
    // (begin, end, entry) with offsets relative to the data start, for the tiling check.
    let mut spans: Vec<(u64, u64, TensorEntry)> = Vec::with_capacity(map.len());
    for (name, v) in map {
        if name == METADATA_KEY {
            header.metadata = parse_metadata(v, path)?;
            continue;
        }
        let (begin, end, entry) = parse_entry(&name, v, data_start, data_len, path)?;
        spans.push((begin, end, entry));
    }
    spans.sort_by_key(|a| (a.0, a.1));
    let mut pos = 0u64;
    for (begin, end, entry) in spans {
        if begin != pos {
            let what = if begin < pos {
                "overlaps the previous tensor"
            } else {
                "leaves a gap after the previous tensor"
            };
            return Err(ConvertError::tensor(
                path,
                &entry.name,
                format!("data_offsets [{begin}, {end}] {what} (which ends at {pos})"),
            ));
        }
        pos = end;
        header.entries.push(entry);
    }
    if pos != data_len {
        return Err(ConvertError::header(
            path,
            format!("tensors cover {pos} bytes but the data section is {data_len} bytes"),
        ));
    }
    Ok(header)
}

fn parse_metadata(v: Value, path: &Path) -> Result<BTreeMap<String, String>, ConvertError> {
    let Value::Object(m) = v else {
        return Err(ConvertError::header(path, "__metadata__ is not an object"));
    };
    m.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            _ => Err(ConvertError::header(
                path,
                format!("__metadata__ value of '{k}' is not a string"),
            )),
        })
        .collect()
}

fn parse_entry(
    name: &str,
    v: Value,
    data_start: u64,
    data_len: u64,
    path: &Path,
) -> Result<(u64, u64, TensorEntry), ConvertError> {
    let bad = |reason: String| ConvertError::tensor(path, name, reason);
    let Value::Object(fields) = v else {
        return Err(bad("entry is not an object".into()));
    };
    if let Some(k) = fields
        .keys()
        .find(|k| !matches!(k.as_str(), "dtype" | "shape" | "data_offsets"))
    {
        return Err(bad(format!("unknown field '{k}'")));
    }
    let dtype_str = fields
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("missing or non-string 'dtype'".into()))?;
    let dtype: Dtype = serde_json::from_value(Value::String(dtype_str.to_string()))
        .map_err(|_| bad(format!("unknown dtype '{dtype_str}'")))?;
    let elem = dtype_bytes(dtype)
        .ok_or_else(|| bad(format!("sub-byte dtype {dtype_str} is not supported")))?;
    let shape = fields
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("missing or non-array 'shape'".into()))?
        .iter()
        .map(|d| {
            d.as_u64()
                .and_then(|d| usize::try_from(d).ok())
                .ok_or_else(|| bad(format!("shape entry {d} is not a non-negative integer")))
        })
        .collect::<Result<Vec<usize>, _>>()?;
    let offsets = fields
        .get("data_offsets")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("missing or non-array 'data_offsets'".into()))?;
    let [begin, end] = offsets.as_slice() else {
        return Err(bad(format!(
            "data_offsets has {} entries, not 2",
            offsets.len()
        )));
    };
    let (Some(begin), Some(end)) = (begin.as_u64(), end.as_u64()) else {
        return Err(bad("data_offsets are not non-negative integers".into()));
    };
    if begin > end || end > data_len {
        return Err(bad(format!(
            "data_offsets [{begin}, {end}] do not lie inside the {data_len}-byte data section"
        )));
    }
    let numel = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
    let nbytes = numel
        .checked_mul(elem)
        .ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
    if (end - begin) != nbytes as u64 {
        return Err(bad(format!(
            "data_offsets [{begin}, {end}] hold {} bytes but {dtype_str} {shape:?} needs {nbytes}",
            end - begin
        )));
    }
    let entry = TensorEntry {
        name: name.to_string(),
        dtype,
        shape,
        offset: data_start + begin,
        len: nbytes,
    };
    Ok((begin, end, entry))
}

/// One tensor of a header being written: offsets are relative to the data start.
#[derive(Debug, Clone, PartialEq)]
pub struct OutEntry {
    /// The tensor name.
    pub name: String,
    /// Its dtype.
    pub dtype: Dtype,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Offset of its first byte, relative to the data start.
    pub begin: u64,
    /// Offset past its last byte, relative to the data start.
    pub end: u64,
}

/// Serializes a header (without the 8 length bytes), padded with spaces to `min_len` and to a
/// multiple of 8 bytes so the data section starts aligned.
pub fn serialize_header(
    entries: &[OutEntry],
    metadata: &BTreeMap<String, String>,
    min_len: usize,
) -> Vec<u8> {
    let mut map = Map::new();
    if !metadata.is_empty() {
        let m: Map<String, Value> = metadata
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        map.insert(METADATA_KEY.to_string(), Value::Object(m));
    }
    for e in entries {
        let mut o = Map::new();
        o.insert("dtype".into(), Value::String(dtype_name(e.dtype)));
        o.insert("shape".into(), Value::from(e.shape.clone()));
        o.insert("data_offsets".into(), Value::from(vec![e.begin, e.end]));
        map.insert(e.name.clone(), Value::Object(o));
    }
    let mut bytes = serde_json::to_vec(&Value::Object(map)).expect("a JSON map serializes");
    let target = bytes.len().max(min_len).next_multiple_of(8);
    bytes.resize(target, b' ');
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(json: &str, data: usize) -> Vec<u8> {
        let mut v = (json.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(json.as_bytes());
        v.resize(v.len() + data, 0);
        v
    }

    fn err(bytes: &[u8]) -> String {
        parse_file_bytes(bytes, Path::new("x.safetensors"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn parses_a_valid_header_in_file_order() {
        let b = file(
            r#"{"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"__metadata__":{"format":"pt"}}"#,
            12,
        );
        let h = parse_file_bytes(&b, Path::new("x")).unwrap();
        assert_eq!(h.entries[0].name, "a");
        assert_eq!(h.entries[1].offset, h.data_start + 4);
        assert_eq!(h.metadata["format"], "pt");
    }

    #[test]
    fn reader_rejects_bad_headers_naming_the_tensor() {
        let e = err(&file(
            r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
            8,
        ));
        assert!(e.contains("'w'") && e.contains("needs 12"), "{e}");
        let e = err(&file(
            r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            4,
        ));
        assert!(e.contains("'w'"), "{e}");
        let e = err(&file(
            r#"{"w":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}}"#,
            8,
        ));
        assert!(e.contains("unknown dtype"), "{e}");
        let e = err(&file(
            r#"{"w":{"dtype":"U8","shape":[18446744073709551615, 2],"data_offsets":[0,8]}}"#,
            8,
        ));
        assert!(e.contains("overflows"), "{e}");
        let e = err(&file(
            r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}"#,
            6,
        ));
        assert!(e.contains("overlaps"), "{e}");
        let mut t = file(r#"{}"#, 0);
        t[0] = 200;
        assert!(err(&t).contains("past the end"));
        assert!(err(&[1, 2, 3]).contains("shorter"));
        assert!(err(&file("[1]", 0)).contains("not a JSON object"));
        assert!(err(&file(r#"{"__metadata__":{"a":1}}"#, 0)).contains("not a string"));
    }

    #[test]
    fn serialized_header_parses_back() {
        let entries = vec![
            OutEntry {
                name: "w".into(),
                dtype: Dtype::F16,
                shape: vec![3],
                begin: 0,
                end: 6,
            },
            OutEntry {
                name: "c".into(),
                dtype: Dtype::U8,
                shape: vec![1],
                begin: 6,
                end: 7,
            },
        ];
        let meta = BTreeMap::from([("k".to_string(), "v".to_string())]);
        let h = serialize_header(&entries, &meta, 100);
        assert!(h.len() >= 100 && h.len() % 8 == 0);
        let mut f = (h.len() as u64).to_le_bytes().to_vec();
        f.extend_from_slice(&h);
        f.resize(f.len() + 7, 0);
        let back = parse_file_bytes(&f, Path::new("x")).unwrap();
        assert_eq!(back.entries.len(), 2);
        assert_eq!(back.metadata, meta);
    }
}
