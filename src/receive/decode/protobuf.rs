//! An `ExportTraceServiceRequest` walked in place ([`wire`]): resources, scopes and spans in the
//! order they come, each span's fields and attributes borrowed from the request's bytes and handed
//! to the decoding [`Session`], everything else checked for structure and dropped.
//!
//! Field numbers are those of `opentelemetry/proto/{collector/trace,trace,resource,common}/v1`.

use super::wire::{
    self, Cursor, Problem, Schema, Segments, WireError, WireType, check, check_field, each_field,
    each_field_of, expect, nested,
};
use super::{Attr, AttrValue, LinkFields, ResourceInfo, Session, SpanFields};

use WireType::{LengthDelimited, SixtyFourBit, ThirtyTwoBit, Varint};

/// A problem found in field `field` of message `message`.
fn at(message: &'static str, field: &'static str) -> impl Fn(Problem) -> WireError {
    move |p| WireError::from(p).within(message, field)
}

/// A length-delimited message field's bytes, one level below `depth`.
fn message<'a>(wire: WireType, c: &mut Cursor<'a>, depth: u32) -> Result<(&'a [u8], u32), Problem> {
    expect(wire, LengthDelimited)?;
    let inner = nested(depth)?;
    Ok((c.delimited()?, inner))
}

pub(super) fn request<'a>(s: &mut Session<'a>, bytes: &'a [u8]) -> wire::Result<()> {
    const M: &str = "ExportTraceServiceRequest";
    let depth = wire::RECURSION_LIMIT;
    let mut ri = 0;
    each_field_of(bytes, depth, &mut |tag, w, c| {
        if tag != 1 {
            return Ok(false);
        }
        let (rs, inner) = message(w, c, depth).map_err(at(M, "resource_spans"))?;
        resource_spans(s, rs, inner, ri).map_err(|e| e.within(M, "resource_spans"))?;
        ri += 1;
        Ok(true)
    })
}

fn resource_spans<'a>(
    s: &mut Session<'a>,
    bytes: &'a [u8],
    depth: u32,
    ri: usize,
) -> wire::Result<()> {
    const M: &str = "ResourceSpans";
    let mut resource = Segments::default();
    let mut resource_depth = depth;
    let mut scopes = Vec::new();
    each_field_of(bytes, depth, &mut |tag, w, c| {
        match tag {
            1 => {
                let (r, inner) = message(w, c, depth).map_err(at(M, "resource"))?;
                resource.push(r);
                resource_depth = inner;
            }
            2 => {
                let (ss, inner) = message(w, c, depth).map_err(at(M, "scope_spans"))?;
                scopes.push((ss, inner));
            }
            3 => {
                expect(w, LengthDelimited).map_err(at(M, "schema_url"))?;
                c.delimited().map_err(at(M, "schema_url"))?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let res = resource_info(s, &resource, resource_depth).map_err(|e| e.within(M, "resource"))?;
    for (si, (ss, inner)) in scopes.into_iter().enumerate() {
        scope_spans(s, &res, ss, inner, (ri, si)).map_err(|e| e.within(M, "scope_spans"))?;
    }
    Ok(())
}

/// The resource's attributes, for the session; its other fields checked.
fn resource_info<'a>(
    s: &mut Session<'a>,
    resource: &Segments<'a>,
    depth: u32,
) -> wire::Result<ResourceInfo> {
    const M: &str = "Resource";
    let mut attrs: Vec<Attr<'a>> = Vec::new();
    each_field(resource, depth, |tag, w, c| {
        if tag != 1 {
            return check_field(Schema::Resource, tag, w, c, depth);
        }
        let (kv, inner) = message(w, c, depth).map_err(at(M, "attributes"))?;
        attrs.push(key_value(kv, inner).map_err(|e| e.within(M, "attributes"))?);
        Ok(true)
    })?;
    s.resource(attrs.into_iter().map(Ok))
}

fn scope_spans<'a>(
    s: &mut Session<'a>,
    res: &ResourceInfo,
    bytes: &'a [u8],
    depth: u32,
    (ri, si): (usize, usize),
) -> wire::Result<()> {
    const M: &str = "ScopeSpans";
    let mut pi = 0;
    each_field_of(bytes, depth, &mut |tag, w, c| {
        match tag {
            1 => {
                let (scope, inner) = message(w, c, depth).map_err(at(M, "scope"))?;
                check(Schema::InstrumentationScope, scope, inner)
                    .map_err(|e| e.within(M, "scope"))?;
            }
            2 => {
                let (span_bytes, inner) = message(w, c, depth).map_err(at(M, "spans"))?;
                span(s, res, span_bytes, inner, (ri, si, pi)).map_err(|e| e.within(M, "spans"))?;
                pi += 1;
            }
            3 => {
                expect(w, LengthDelimited).map_err(at(M, "schema_url"))?;
                c.delimited().map_err(at(M, "schema_url"))?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    })
}

fn span<'a>(
    s: &mut Session<'a>,
    res: &ResourceInfo,
    bytes: &'a [u8],
    depth: u32,
    pos: (usize, usize, usize),
) -> wire::Result<()> {
    const M: &str = "Span";
    let mut f = SpanFields {
        trace_id: &[],
        span_id: &[],
        parent_span_id: &[],
        name: &[],
        kind: 0,
        start_ns: 0,
        end_ns: 0,
        status: 0,
    };
    let mut attrs = std::mem::take(&mut s.attr_buf);
    attrs.clear();
    let mut links = std::mem::take(&mut s.link_buf);
    links.clear();
    let mut attr_depth = depth;
    let read = each_field_of(bytes, depth, &mut |tag, w, c| {
        match tag {
            1 => f.trace_id = bytes_field(w, c).map_err(at(M, "trace_id"))?,
            2 => f.span_id = bytes_field(w, c).map_err(at(M, "span_id"))?,
            3 => {
                bytes_field(w, c).map_err(at(M, "trace_state"))?;
            }
            4 => f.parent_span_id = bytes_field(w, c).map_err(at(M, "parent_span_id"))?,
            5 => f.name = bytes_field(w, c).map_err(at(M, "name"))?,
            6 => {
                expect(w, Varint).map_err(at(M, "kind"))?;
                f.kind = c.varint().map_err(at(M, "kind"))? as i32;
            }
            7 => {
                expect(w, SixtyFourBit).map_err(at(M, "start_time_unix_nano"))?;
                f.start_ns = c.fixed64().map_err(at(M, "start_time_unix_nano"))?;
            }
            8 => {
                expect(w, SixtyFourBit).map_err(at(M, "end_time_unix_nano"))?;
                f.end_ns = c.fixed64().map_err(at(M, "end_time_unix_nano"))?;
            }
            9 => {
                let (kv, inner) = message(w, c, depth).map_err(at(M, "attributes"))?;
                attrs.push(kv);
                attr_depth = inner;
            }
            10 | 12 | 14 => {
                expect(w, Varint).map_err(at(M, dropped(tag)))?;
                c.varint().map_err(at(M, dropped(tag)))?;
            }
            11 => {
                let (event, inner) = message(w, c, depth).map_err(at(M, "events"))?;
                check(Schema::Event, event, inner).map_err(|e| e.within(M, "events"))?;
            }
            13 => {
                let (bytes, inner) = message(w, c, depth).map_err(at(M, "links"))?;
                links.push(link(bytes, inner).map_err(|e| e.within(M, "links"))?);
            }
            15 => {
                let (status, inner) = message(w, c, depth).map_err(at(M, "status"))?;
                if let Some(code) = status_code(status, inner).map_err(|e| e.within(M, "status"))? {
                    f.status = code;
                }
            }
            16 => {
                expect(w, ThirtyTwoBit).map_err(at(M, "flags"))?;
                c.fixed32().map_err(at(M, "flags"))?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    });
    let done = read.and_then(|()| {
        let parsed = attrs
            .iter()
            .map(|kv| key_value(kv, attr_depth).map_err(|e| e.within(M, "attributes")));
        s.span(res, &f, parsed, &links, pos)
    });
    s.attr_buf = attrs;
    s.link_buf = links;
    done
}

/// A link's ids and flags; its other fields checked.
fn link(bytes: &[u8], depth: u32) -> wire::Result<LinkFields<'_>> {
    const M: &str = "Link";
    let mut l = LinkFields::default();
    each_field_of(bytes, depth, &mut |tag, w, c| {
        match tag {
            1 => l.trace_id = bytes_field(w, c).map_err(at(M, "trace_id"))?,
            2 => l.span_id = bytes_field(w, c).map_err(at(M, "span_id"))?,
            6 => {
                expect(w, ThirtyTwoBit).map_err(at(M, "flags"))?;
                l.flags = c.fixed32().map_err(at(M, "flags"))?;
            }
            _ => return check_field(Schema::Link, tag, w, c, depth),
        }
        Ok(true)
    })?;
    Ok(l)
}

fn dropped(tag: u32) -> &'static str {
    match tag {
        10 => "dropped_attributes_count",
        12 => "dropped_events_count",
        _ => "dropped_links_count",
    }
}

fn bytes_field<'a>(w: WireType, c: &mut Cursor<'a>) -> Result<&'a [u8], Problem> {
    expect(w, LengthDelimited)?;
    c.delimited()
}

/// The code of one occurrence of a span's status, if it sets one (the last one set wins).
fn status_code(bytes: &[u8], depth: u32) -> wire::Result<Option<i32>> {
    const M: &str = "Status";
    let mut code = None;
    each_field_of(bytes, depth, &mut |tag, w, c| {
        if tag == 3 {
            expect(w, Varint).map_err(at(M, "code"))?;
            code = Some(c.varint().map_err(at(M, "code"))? as i32);
            return Ok(true);
        }
        check_field(Schema::Status, tag, w, c, depth)
    })?;
    Ok(code)
}

/// A `KeyValue`: its key's bytes (not checked for UTF-8 until used) and what its value is.
fn key_value(bytes: &[u8], depth: u32) -> wire::Result<Attr<'_>> {
    const M: &str = "KeyValue";
    if let Some(attr) = plain_key_value(bytes, depth) {
        return Ok(attr);
    }
    let mut key: &[u8] = &[];
    let mut value = Segments::default();
    let mut value_depth = depth;
    each_field_of(bytes, depth, &mut |tag, w, c| {
        match tag {
            1 => key = bytes_field(w, c).map_err(at(M, "key"))?,
            2 => {
                let (v, inner) = message(w, c, depth).map_err(at(M, "value"))?;
                value.push(v);
                value_depth = inner;
            }
            _ => return check_field(Schema::KeyValue, tag, w, c, depth),
        }
        Ok(true)
    })?;
    let value = any_value(&value, value_depth).map_err(|e| e.within(M, "value"))?;
    Ok((key, value))
}

/// The encoding nearly every SDK writes: the key, then a value holding one string or bool, each
/// once. Read straight through; anything else (`None`) takes the general walk, which also finds
/// what is malformed.
#[inline]
fn plain_key_value(bytes: &[u8], depth: u32) -> Option<Attr<'_>> {
    if depth == 0 {
        return None;
    }
    let mut c = Cursor::new(bytes);
    if c.key().ok()? != (1, LengthDelimited) {
        return None;
    }
    let key = c.delimited().ok()?;
    if c.key().ok()? != (2, LengthDelimited) {
        return None;
    }
    let mut v = Cursor::new(c.delimited().ok()?);
    if !c.is_empty() {
        return None;
    }
    let value = match v.key().ok()? {
        (1, LengthDelimited) => AttrValue::Str(v.delimited().ok()?),
        (2, Varint) => AttrValue::Bool(v.varint().ok()? != 0),
        _ => return None,
    };
    v.is_empty().then_some((key, value))
}

/// What an `AnyValue` holds, its occurrences merged: the last variant set wins, and an array
/// merged with an array is one array, whose first element is the first of any of them.
fn any_value<'a>(segments: &Segments<'a>, depth: u32) -> wire::Result<AttrValue<'a>> {
    const M: &str = "AnyValue";
    enum Held<'a> {
        Nothing,
        Str(&'a [u8]),
        Bool(bool),
        Other,
        /// `None` until an occurrence has an element; then whether the first is a string.
        Array(Option<Option<&'a [u8]>>),
    }
    let mut held = Held::Nothing;
    each_field(segments, depth, |tag, w, c| {
        let err = at(M, "value");
        match tag {
            1 => held = Held::Str(bytes_field(w, c).map_err(err)?),
            2 => {
                expect(w, Varint).map_err(&err)?;
                held = Held::Bool(c.varint().map_err(err)? != 0);
            }
            5 => {
                let (array, inner) = message(w, c, depth).map_err(err)?;
                check(Schema::ArrayValue, array, inner).map_err(|e| e.within(M, "value"))?;
                let first = first_element(array);
                held = match held {
                    Held::Array(Some(known)) => Held::Array(Some(known)),
                    _ => Held::Array(first),
                };
            }
            3 | 4 | 6 | 7 | 8 => {
                check_field(Schema::AnyValue, tag, w, c, depth)?;
                held = Held::Other;
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(match held {
        Held::Str(s) | Held::Array(Some(Some(s))) => AttrValue::Str(s),
        Held::Bool(b) => AttrValue::Bool(b),
        _ => AttrValue::Other,
    })
}

/// Whether an `ArrayValue` (already checked) has a first element, and if so whether it is a
/// string: its value's last variant.
fn first_element(array: &[u8]) -> Option<Option<&[u8]>> {
    let mut c = Cursor::new(array);
    while let Ok((tag, w)) = c.key() {
        if tag == 1 && w == LengthDelimited {
            let element = c.delimited().ok()?;
            let mut string = None;
            let mut e = Cursor::new(element);
            while let Ok((tag, w)) = e.key() {
                match (tag, w) {
                    (1, LengthDelimited) => string = e.delimited().ok(),
                    (2..=8, _) => {
                        string = None;
                        e.skip(w, tag, u32::MAX).ok()?;
                    }
                    _ => e.skip(w, tag, u32::MAX).ok()?,
                }
            }
            return Some(string);
        }
        c.skip(w, tag, u32::MAX).ok()?;
    }
    None
}
