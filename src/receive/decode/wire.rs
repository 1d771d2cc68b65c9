//! The protobuf wire format, read in place: just enough of it for OTLP traces.
//!
//! Decoding a request into `opentelemetry-proto`'s structs allocates every string, id and attribute
//! of every span, and checks the UTF-8 of strings nobody reads. Verification needs a few fields of
//! each span and a few of its attributes; the rest only has to be well formed. So this module walks
//! the bytes, hands out borrowed slices of what is used, and checks the structure of everything
//! else without keeping it.
//!
//! It answers malformed input as prost does: the same conditions are errors (a bad varint, a length
//! past the end, a known field with the wrong wire type, an unexpected end-group tag, nesting past
//! prost's recursion limit), with prost's message format (`failed to decode Protobuf message:
//! Span.name: invalid string value: data is not UTF-8 encoded`). One difference is deliberate:
//! strings that are not used are not checked for UTF-8, since they are never read.
//!
//! A message field that occurs more than once is merged, as protobuf requires: its occurrences are
//! read one after another as if they were one encoding ([`Segments`]).

use std::fmt;

/// prost's default recursion limit, counted the same way.
pub const RECURSION_LIMIT: u32 = 100;

/// A protobuf wire type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireType {
    Varint,
    SixtyFourBit,
    LengthDelimited,
    StartGroup,
    EndGroup,
    ThirtyTwoBit,
}

/// Why the bytes are not a valid encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    Varint,
    KeyValue(u64),
    WireTypeValue(u64),
    TagZero,
    Underflow,
    WireType { got: WireType, want: WireType },
    EndGroup,
    Recursion,
    Utf8,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Varint => f.write_str("invalid varint"),
            Problem::KeyValue(k) => write!(f, "invalid key value: {k}"),
            Problem::WireTypeValue(v) => write!(f, "invalid wire type value: {v}"),
            Problem::TagZero => f.write_str("invalid tag value: 0"),
            Problem::Underflow => f.write_str("buffer underflow"),
            Problem::WireType { got, want } => {
                write!(f, "invalid wire type: {got:?} (expected {want:?})")
            }
            Problem::EndGroup => f.write_str("unexpected end group tag"),
            Problem::Recursion => f.write_str("recursion limit reached"),
            Problem::Utf8 => f.write_str("invalid string value: data is not UTF-8 encoded"),
        }
    }
}

/// A decoding error with the fields it was found in, innermost first, as prost reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireError {
    pub problem: Problem,
    stack: Vec<(&'static str, &'static str)>,
}

impl WireError {
    pub fn within(mut self, message: &'static str, field: &'static str) -> Self {
        self.stack.push((message, field));
        self
    }
}

impl From<Problem> for WireError {
    fn from(problem: Problem) -> Self {
        WireError {
            problem,
            stack: Vec::new(),
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("failed to decode Protobuf message: ")?;
        for (message, field) in &self.stack {
            write!(f, "{message}.{field}: ")?;
        }
        write!(f, "{}", self.problem)
    }
}

impl std::error::Error for WireError {}

pub type Result<T> = std::result::Result<T, WireError>;

/// Bytes being read.
#[derive(Clone, Copy, Debug)]
pub struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Most varints in OTLP (keys, lengths, enums) are one or two bytes: those are read inline,
    /// the rest out of line.
    #[inline(always)]
    pub fn varint(&mut self) -> std::result::Result<u64, Problem> {
        match *self.buf {
            [a, ref rest @ ..] if a < 0x80 => {
                self.buf = rest;
                Ok(u64::from(a))
            }
            [a, b, ref rest @ ..] if b < 0x80 => {
                self.buf = rest;
                Ok(u64::from(a & 0x7f) | (u64::from(b) << 7))
            }
            _ => self.varint_long(),
        }
    }

    #[inline(never)]
    fn varint_long(&mut self) -> std::result::Result<u64, Problem> {
        let b = self.buf;
        let mut value = 0u64;
        for (i, &byte) in b.iter().take(10).enumerate() {
            if i == 9 && byte > 1 {
                return Err(Problem::Varint);
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                self.buf = &b[i + 1..];
                return Ok(value);
            }
        }
        Err(Problem::Varint)
    }

    /// A field's key: its number and wire type.
    #[inline(always)]
    pub fn key(&mut self) -> std::result::Result<(u32, WireType), Problem> {
        let key = self.varint()?;
        if key > u64::from(u32::MAX) {
            return Err(Problem::KeyValue(key));
        }
        let wire = match key & 7 {
            0 => WireType::Varint,
            1 => WireType::SixtyFourBit,
            2 => WireType::LengthDelimited,
            3 => WireType::StartGroup,
            4 => WireType::EndGroup,
            5 => WireType::ThirtyTwoBit,
            v => return Err(Problem::WireTypeValue(v)),
        };
        let tag = (key >> 3) as u32;
        if tag == 0 {
            return Err(Problem::TagZero);
        }
        Ok((tag, wire))
    }

    #[inline]
    fn take(&mut self, n: u64) -> std::result::Result<&'a [u8], Problem> {
        if n > self.buf.len() as u64 {
            return Err(Problem::Underflow);
        }
        let (head, rest) = self.buf.split_at(n as usize);
        self.buf = rest;
        Ok(head)
    }

    /// A length-delimited field's bytes.
    #[inline]
    pub fn delimited(&mut self) -> std::result::Result<&'a [u8], Problem> {
        let n = self.varint()?;
        self.take(n)
    }

    pub fn fixed64(&mut self) -> std::result::Result<u64, Problem> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    pub fn fixed32(&mut self) -> std::result::Result<u32, Problem> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    /// Skips a field nobody knows, as prost does: its bytes are not looked into, but groups
    /// are walked to their end.
    pub fn skip(
        &mut self,
        wire: WireType,
        tag: u32,
        depth: u32,
    ) -> std::result::Result<(), Problem> {
        if depth == 0 {
            return Err(Problem::Recursion);
        }
        match wire {
            WireType::Varint => self.varint().map(drop),
            WireType::SixtyFourBit => self.take(8).map(drop),
            WireType::ThirtyTwoBit => self.take(4).map(drop),
            WireType::LengthDelimited => self.delimited().map(drop),
            WireType::StartGroup => loop {
                let (inner, w) = self.key()?;
                if w == WireType::EndGroup {
                    if inner != tag {
                        return Err(Problem::EndGroup);
                    }
                    return Ok(());
                }
                self.skip(w, inner, depth - 1)?;
            },
            WireType::EndGroup => Err(Problem::EndGroup),
        }
    }
}

/// Checks that a known field came with its wire type.
#[inline]
pub fn expect(got: WireType, want: WireType) -> std::result::Result<(), Problem> {
    if got == want {
        Ok(())
    } else {
        Err(Problem::WireType { got, want })
    }
}

/// A message field's occurrences: one, usually; several are merged by reading them in order.
#[derive(Clone, Debug, Default)]
pub struct Segments<'a> {
    first: Option<&'a [u8]>,
    more: Vec<&'a [u8]>,
}

impl<'a> Segments<'a> {
    pub fn push(&mut self, s: &'a [u8]) {
        if self.first.is_none() {
            self.first = Some(s);
        } else {
            self.more.push(s);
        }
    }

    pub fn is_present(&self) -> bool {
        self.first.is_some()
    }

    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.first.into_iter().chain(self.more.iter().copied())
    }
}

/// Calls `field` for every field of the message in `segments`, at `depth` (prost's recursion
/// context of the message's fields). `field` returns `Ok(false)` for a field it does not know,
/// which is then skipped.
pub fn each_field<'a>(
    segments: &Segments<'a>,
    depth: u32,
    mut field: impl FnMut(u32, WireType, &mut Cursor<'a>) -> Result<bool>,
) -> Result<()> {
    for seg in segments.iter() {
        each_field_of(seg, depth, &mut field)?;
    }
    Ok(())
}

/// [`each_field`] for one encoding.
#[inline]
pub fn each_field_of<'a>(
    bytes: &'a [u8],
    depth: u32,
    field: &mut impl FnMut(u32, WireType, &mut Cursor<'a>) -> Result<bool>,
) -> Result<()> {
    let mut c = Cursor::new(bytes);
    while !c.is_empty() {
        let (tag, wire) = c.key()?;
        if !field(tag, wire, &mut c)? {
            c.skip(wire, tag, depth)?;
        }
    }
    Ok(())
}

/// A nested message one level down from `depth`, or prost's recursion error.
#[inline]
pub fn nested(depth: u32) -> std::result::Result<u32, Problem> {
    depth.checked_sub(1).ok_or(Problem::Recursion)
}

/// A string that is used: checked for UTF-8 as prost checks every string.
pub fn utf8(b: &[u8]) -> std::result::Result<&str, Problem> {
    std::str::from_utf8(b).map_err(|_| Problem::Utf8)
}

/// The OTLP messages whose content grayscope does not use but whose structure it checks, as
/// prost would in decoding them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    Resource,
    InstrumentationScope,
    EntityRef,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
    Event,
    Link,
    Status,
}

/// How a known field is encoded.
#[derive(Clone, Copy)]
enum Kind {
    Varint,
    Fixed64,
    Fixed32,
    /// A string or bytes: not looked into.
    Bytes,
    Message(Schema),
}

impl Schema {
    pub fn name(self) -> &'static str {
        match self {
            Schema::Resource => "Resource",
            Schema::InstrumentationScope => "InstrumentationScope",
            Schema::EntityRef => "EntityRef",
            Schema::KeyValue => "KeyValue",
            Schema::AnyValue => "AnyValue",
            Schema::ArrayValue => "ArrayValue",
            Schema::KeyValueList => "KeyValueList",
            Schema::Event => "Event",
            Schema::Link => "Link",
            Schema::Status => "Status",
        }
    }

    fn field(self, tag: u32) -> Option<(&'static str, Kind)> {
        use Kind::*;
        Some(match (self, tag) {
            (Schema::Resource, 1) => ("attributes", Message(Schema::KeyValue)),
            (Schema::Resource, 2) => ("dropped_attributes_count", Varint),
            (Schema::Resource, 3) => ("entity_refs", Message(Schema::EntityRef)),
            (Schema::InstrumentationScope, 1) => ("name", Bytes),
            (Schema::InstrumentationScope, 2) => ("version", Bytes),
            (Schema::InstrumentationScope, 3) => ("attributes", Message(Schema::KeyValue)),
            (Schema::InstrumentationScope, 4) => ("dropped_attributes_count", Varint),
            (Schema::EntityRef, 1) => ("schema_url", Bytes),
            (Schema::EntityRef, 2) => ("type", Bytes),
            (Schema::EntityRef, 3) => ("id_keys", Bytes),
            (Schema::EntityRef, 4) => ("description_keys", Bytes),
            (Schema::KeyValue, 1) => ("key", Bytes),
            (Schema::KeyValue, 2) => ("value", Message(Schema::AnyValue)),
            (Schema::KeyValue, 3) => ("key_strindex", Varint),
            (Schema::AnyValue, 1 | 7) => ("value", Bytes),
            (Schema::AnyValue, 2 | 3 | 8) => ("value", Varint),
            (Schema::AnyValue, 4) => ("value", Fixed64),
            (Schema::AnyValue, 5) => ("value", Message(Schema::ArrayValue)),
            (Schema::AnyValue, 6) => ("value", Message(Schema::KeyValueList)),
            (Schema::ArrayValue, 1) => ("values", Message(Schema::AnyValue)),
            (Schema::KeyValueList, 1) => ("values", Message(Schema::KeyValue)),
            (Schema::Event, 1) => ("time_unix_nano", Fixed64),
            (Schema::Event, 2) => ("name", Bytes),
            (Schema::Event, 3) => ("attributes", Message(Schema::KeyValue)),
            (Schema::Event, 4) => ("dropped_attributes_count", Varint),
            (Schema::Link, 1) => ("trace_id", Bytes),
            (Schema::Link, 2) => ("span_id", Bytes),
            (Schema::Link, 3) => ("trace_state", Bytes),
            (Schema::Link, 4) => ("attributes", Message(Schema::KeyValue)),
            (Schema::Link, 5) => ("dropped_attributes_count", Varint),
            (Schema::Link, 6) => ("flags", Fixed32),
            (Schema::Status, 2) => ("message", Bytes),
            (Schema::Status, 3) => ("code", Varint),
            _ => return None,
        })
    }
}

/// Reads one known field of `schema` that is not used, checking its structure only; `Ok(false)`
/// for a field the schema does not know.
pub fn check_field(
    schema: Schema,
    tag: u32,
    wire: WireType,
    c: &mut Cursor<'_>,
    depth: u32,
) -> Result<bool> {
    let Some((name, kind)) = schema.field(tag) else {
        return Ok(false);
    };
    let at = |e: Problem| WireError::from(e).within(schema.name(), name);
    match kind {
        Kind::Varint => {
            expect(wire, WireType::Varint).map_err(at)?;
            c.varint().map_err(at)?;
        }
        Kind::Fixed64 => {
            expect(wire, WireType::SixtyFourBit).map_err(at)?;
            c.fixed64().map_err(at)?;
        }
        Kind::Fixed32 => {
            expect(wire, WireType::ThirtyTwoBit).map_err(at)?;
            c.fixed32().map_err(at)?;
        }
        Kind::Bytes => {
            expect(wire, WireType::LengthDelimited).map_err(at)?;
            c.delimited().map_err(at)?;
        }
        Kind::Message(inner) => {
            expect(wire, WireType::LengthDelimited).map_err(at)?;
            let inner_depth = nested(depth).map_err(at)?;
            let bytes = c.delimited().map_err(at)?;
            check(inner, bytes, inner_depth).map_err(|e| e.within(schema.name(), name))?;
        }
    }
    Ok(true)
}

/// Checks the structure of a message that is not used.
pub fn check(schema: Schema, bytes: &[u8], depth: u32) -> Result<()> {
    each_field_of(bytes, depth, &mut |tag, wire, c| {
        check_field(schema, tag, wire, c, depth)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_as_prost_reads_them() {
        for (bytes, want) in [
            (&[0x00][..], Ok(0)),
            (&[0x7f], Ok(127)),
            (&[0x80, 0x01], Ok(128)),
            (
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
                Ok(u64::MAX),
            ),
            (
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
                Err(Problem::Varint),
            ),
            (&[0x80], Err(Problem::Varint)),
            (&[], Err(Problem::Varint)),
        ] {
            let mut c = Cursor::new(bytes);
            assert_eq!(c.varint(), want, "{bytes:?}");
            let mut b = bytes;
            let prost = prost::encoding::decode_varint(&mut b).map_err(|_| Problem::Varint);
            assert_eq!(prost, want, "prost on {bytes:?}");
        }
    }

    #[test]
    fn errors_read_like_prosts() {
        let e = WireError::from(Problem::Utf8)
            .within("Span", "name")
            .within("ScopeSpans", "spans");
        assert_eq!(
            e.to_string(),
            "failed to decode Protobuf message: Span.name: ScopeSpans.spans: invalid string value: data is not UTF-8 encoded"
        );
    }
}
