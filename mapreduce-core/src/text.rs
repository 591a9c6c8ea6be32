//! Text output for map-only jobs: any serde key and value written as one line of
//! tab-separated text, the way Hadoop's `TextOutputFormat` writes `key TAB value`.
//!
//! Numbers and `bool` are written with `Display` (so `1.0_f64` is `1`), a `char` or a string
//! as it is, bytes as UTF-8 with each invalid sequence replaced by U+FFFD. Nothing is quoted
//! or escaped: a TAB or newline inside a string moves the fields or splits the line, as in
//! Hadoop. `None`, `()` and unit structs write nothing, not even an empty field; `Some`,
//! newtypes and newtype variants write what they hold; a unit variant writes its name.
//! Everything else (sequences, tuples, structs, maps, tuple and struct variants) writes its
//! fields without their names, joined by a TAB, and nesting flattens: `(1, (2, 3))` is
//! `1 TAB 2 TAB 3`. A map writes each key, then its value.
//!
//! ```
//! use mapreduce_core::text::write_pair;
//!
//! let mut out = Vec::new();
//! write_pair("alice", &(3, Some(1.5), ["x", "y"]), &mut out)?;
//! write_pair("bob", &(), &mut out)?;
//! write_pair("carol", "", &mut out)?;
//! assert_eq!(out, b"alice\t3\t1.5\tx\ty\nbob\ncarol\t\n");
//! # Ok::<(), mapreduce_core::text::TextError>(())
//! ```

use std::fmt::Display;
use std::io::Write;

use serde::Serialize;
use serde::ser::{self, Serializer};

/// Writes `value` as text into `out` (no line terminator). On error `out` is left as it was.
pub fn write_text<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), TextError> {
    undo_on_error(out, |out| Text::new(out, false).write(value).map(drop))
}

/// Writes one output line: the key's text, then a TAB and the value's text unless the value
/// is unit-like (`()`, a unit struct, `None`), then `\n`. As in Hadoop, a unit-like key
/// writes no TAB either: the line is the value's text. On error `out` is left as it was.
pub fn write_pair<K, V>(key: &K, value: &V, out: &mut Vec<u8>) -> Result<(), TextError>
where
    K: Serialize + ?Sized,
    V: Serialize + ?Sized,
{
    undo_on_error(out, |out| {
        let unit_key = Text::new(out, false).write(key)?;
        let end = out.len();
        // After a key, the value's first field starts with the TAB.
        let unit_value = Text::new(out, !unit_key).write(value)?;
        if !unit_key && !unit_value && out.len() == end {
            // A value that is not unit-like but has no fields (an empty sequence): `key TAB`.
            out.push(b'\t');
        }
        out.push(b'\n');
        Ok(())
    })
}

/// Runs `f` on `out`, and truncates `out` back to where it was if `f` fails.
fn undo_on_error(out: &mut Vec<u8>, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let start = out.len();
    let result = f(out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// A value that has no text form.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// The value's `Serialize` impl failed, with this message.
    #[error("value has no text form: {0}")]
    Custom(String),
}

impl ser::Error for TextError {
    fn custom<T: Display>(msg: T) -> Self {
        TextError::Custom(msg.to_string())
    }
}

type R = Result<(), TextError>;

/// The serializer: writes fields straight into `out`.
struct Text<'a> {
    out: &'a mut Vec<u8>,
    /// The next field needs a TAB before it.
    sep: bool,
    /// Whether the top-level value is unit-like: `None` until the first call that is not
    /// `Some` or a newtype.
    unit: Option<bool>,
}

impl<'a> Text<'a> {
    fn new(out: &'a mut Vec<u8>, sep: bool) -> Self {
        Text { out, sep, unit: None }
    }

    /// Writes `value`, and says whether it was unit-like.
    fn write<T: Serialize + ?Sized>(mut self, value: &T) -> Result<bool, TextError> {
        value.serialize(&mut self)?;
        Ok(self.unit == Some(true))
    }

    /// Starts a field: a TAB unless it is the first.
    fn field(&mut self) -> &mut Vec<u8> {
        self.unit.get_or_insert(false);
        if self.sep {
            self.out.push(b'\t');
        }
        self.sep = true;
        self.out
    }

    fn display(&mut self, v: impl Display) -> R {
        // Writing into a `Vec` cannot fail.
        let _ = write!(self.field(), "{v}");
        Ok(())
    }

    /// An integer, with `itoa`: what `Display` writes, without the formatting machinery.
    fn integer(&mut self, v: impl itoa::Integer) -> R {
        self.field().extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        Ok(())
    }

    fn bytes(&mut self, v: &[u8]) -> R {
        self.field().extend_from_slice(v);
        Ok(())
    }

    fn nothing(&mut self) -> R {
        self.unit.get_or_insert(true);
        Ok(())
    }

    fn compound(&mut self) -> Result<&mut Self, TextError> {
        self.unit.get_or_insert(false);
        Ok(self)
    }
}

/// Serializer methods that ignore their names and lengths and call `self.$call`.
macro_rules! methods {
    ($($method:ident($($arg:ty),*) -> $ret:ty => $call:ident($($v:ident: $vt:ty)?);)*) => {
        $(fn $method(self, $(_: $arg,)* $($v: $vt)?) -> Result<$ret, TextError> {
            self.$call($($v)?)
        })*
    };
}

impl<'b, 'a> Serializer for &'b mut Text<'a> {
    type Ok = ();
    type Error = TextError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    methods! {
        serialize_bool() -> () => display(v: bool);
        serialize_i8() -> () => integer(v: i8);
        serialize_i16() -> () => integer(v: i16);
        serialize_i32() -> () => integer(v: i32);
        serialize_i64() -> () => integer(v: i64);
        serialize_i128() -> () => integer(v: i128);
        serialize_u8() -> () => integer(v: u8);
        serialize_u16() -> () => integer(v: u16);
        serialize_u32() -> () => integer(v: u32);
        serialize_u64() -> () => integer(v: u64);
        serialize_u128() -> () => integer(v: u128);
        serialize_f32() -> () => display(v: f32);
        serialize_f64() -> () => display(v: f64);
        serialize_none() -> () => nothing();
        serialize_unit() -> () => nothing();
        serialize_unit_struct(&'static str) -> () => nothing();
        serialize_seq(Option<usize>) -> Self => compound();
        serialize_tuple(usize) -> Self => compound();
        serialize_tuple_struct(&'static str, usize) -> Self => compound();
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self => compound();
        serialize_map(Option<usize>) -> Self => compound();
        serialize_struct(&'static str, usize) -> Self => compound();
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self => compound();
    }

    fn serialize_char(self, v: char) -> R {
        self.bytes(v.encode_utf8(&mut [0; 4]).as_bytes())
    }

    fn serialize_str(self, v: &str) -> R {
        self.bytes(v.as_bytes())
    }

    fn serialize_bytes(self, v: &[u8]) -> R {
        let out = self.field();
        for chunk in v.utf8_chunks() {
            out.extend_from_slice(chunk.valid().as_bytes());
            if !chunk.invalid().is_empty() {
                out.extend_from_slice("\u{FFFD}".as_bytes());
            }
        }
        Ok(())
    }

    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> R {
        self.bytes(variant.as_bytes())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> R {
        value.serialize(self)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> R {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> R {
        value.serialize(self)
    }

    fn collect_str<T: Display + ?Sized>(self, value: &T) -> R {
        self.display(value)
    }
}

/// The compound serializers: each element is one more field (or several, if it nests).
macro_rules! compound {
    ($($trait:ident { $($method:ident($($name:ident),*)),* })*) => {
        $(impl ser::$trait for &mut Text<'_> {
            type Ok = ();
            type Error = TextError;

            $(fn $method<T: Serialize + ?Sized>(&mut self, $($name: &'static str,)* value: &T) -> R {
                value.serialize(&mut **self)
            })*

            fn end(self) -> R {
                Ok(())
            }
        })*
    };
}

compound! {
    SerializeSeq { serialize_element() }
    SerializeTuple { serialize_element() }
    SerializeTupleStruct { serialize_field() }
    SerializeTupleVariant { serialize_field() }
    SerializeMap { serialize_key(), serialize_value() }
    SerializeStruct { serialize_field(_name) }
    SerializeStructVariant { serialize_field(_name) }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn text<T: Serialize + ?Sized>(value: &T) -> String {
        let mut out = Vec::new();
        write_text(value, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn pair<K: Serialize + ?Sized, V: Serialize + ?Sized>(key: &K, value: &V) -> String {
        let mut out = Vec::new();
        write_pair(key, value, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Bytes (as `serde_bytes` writes them), a `Display` value (with `collect_str`), or an error.
    enum Custom {
        Bytes(&'static [u8]),
        Version(u32, u32),
        Fails,
    }

    impl Serialize for Custom {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self {
                Custom::Bytes(b) => s.serialize_bytes(b),
                Custom::Version(major, minor) => s.collect_str(&format_args!("v{major}.{minor}")),
                Custom::Fails => Err(ser::Error::custom("no text here")),
            }
        }
    }

    #[derive(Serialize)]
    struct Point {
        x: i32,
        label: &'static str,
    }

    #[derive(Serialize)]
    struct Marker;

    #[derive(Serialize)]
    struct Meters(f64);

    #[derive(Serialize)]
    struct Pair(u8, &'static str);

    #[derive(Serialize)]
    enum Shape {
        Empty,
        Circle(f64),
        Rect(u32, u32),
        Named { name: &'static str, sides: u8 },
    }

    #[test]
    fn scalars() {
        assert_eq!(text(&(true, false, -42_i8, u64::MAX)), "true\tfalse\t-42\t18446744073709551615");
        assert_eq!(text(&u128::MAX), "340282366920938463463374607431768211455");
        assert_eq!(text(&i128::MIN), "-170141183460469231731687303715884105728");
        assert_eq!(text(&(1.5_f64, 1.0_f64, 0.1_f32, f64::NAN)), "1.5\t1\t0.1\tNaN");
        assert_eq!(text(&('x', 'é')), "x\té");
        assert_eq!(text("a \"b\"\tc"), "a \"b\"\tc");
        assert_eq!(text(&(Custom::Bytes(b"caf\xc3\xa9"), Custom::Bytes(b"a\xffb\xc3"))), "café\ta\u{FFFD}b\u{FFFD}");
        assert_eq!(text(&Custom::Version(1, 2)), "v1.2");
        // A `Vec<u8>` is a sequence of numbers, not bytes.
        assert_eq!(text(&vec![1_u8, 2]), "1\t2");
    }

    #[test]
    fn unit_like_writes_nothing() {
        assert_eq!(text(&()), "");
        assert_eq!(text(&None::<u8>), "");
        assert_eq!(text(&Marker), "");
        assert_eq!(text(&(Some(7), Meters(2.5))), "7\t2.5");
        // Inside a tuple a unit-like value is no field at all; an empty string is one.
        assert_eq!(text(&(1, (), None::<u8>, Marker, Some(2))), "1\t2");
        assert_eq!(text(&("", "b", Some(""))), "\tb\t");
    }

    #[test]
    fn compounds_join_fields_and_nesting_flattens() {
        assert_eq!(text(&vec!["a".to_string(), "b c".to_string()]), "a\tb c");
        assert_eq!(text(&Vec::<String>::new()), "");
        assert_eq!(text(&(1, "two", [3, 4], Pair(5, "x"))), "1\ttwo\t3\t4\t5\tx");
        assert_eq!(text(&Point { x: -1, label: "p" }), "-1\tp");
        assert_eq!(text(&(1, (2, (3, "x")), vec![(4, 'a'), (5, 'b')])), "1\t2\t3\tx\t4\ta\t5\tb");
        assert_eq!(text(&(("a", Vec::<u8>::new()), "b")), "a\tb");
        assert_eq!(text(&(Point { x: 0, label: "o" }, Some(Pair(1, "y")))), "0\to\t1\ty");
    }

    #[test]
    fn enums_and_maps() {
        assert_eq!(text(&Shape::Empty), "Empty");
        assert_eq!(text(&Shape::Circle(0.5)), "0.5");
        assert_eq!(text(&Shape::Rect(3, 4)), "3\t4");
        assert_eq!(text(&Shape::Named { name: "tri", sides: 3 }), "tri\t3");
        assert_eq!(text(&vec![Shape::Empty, Shape::Rect(1, 2)]), "Empty\t1\t2");
        assert_eq!(text(&BTreeMap::from([("b", 2), ("a", 1)])), "a\t1\tb\t2");
        assert_eq!(text(&BTreeMap::from([(1, (true, "x")), (2, (false, "y"))])), "1\ttrue\tx\t2\tfalse\ty");
    }

    #[test]
    fn pairs_tell_an_empty_string_from_unit() {
        assert_eq!(pair("k", "v"), "k\tv\n");
        assert_eq!(pair("k", ""), "k\t\n");
        assert_eq!(pair("k", &()), "k\n");
        assert_eq!(pair("k", &None::<u8>), "k\n");
        assert_eq!(pair("k", &Marker), "k\n");
        assert_eq!(pair("k", &Some(())), "k\n");
        // An empty sequence is an empty value, not a missing one.
        assert_eq!(pair("k", &Vec::<u8>::new()), "k\t\n");
        assert_eq!(pair("k", &((), 1)), "k\t1\n");
        assert_eq!(pair(&("a", 1), &(2, Shape::Empty)), "a\t1\t2\tEmpty\n");
        assert_eq!(pair("", "v"), "\tv\n");
        // A unit-like key writes no TAB, as Hadoop does for a `NullWritable` key.
        assert_eq!(pair(&(), &(1, 2)), "1\t2\n");
        assert_eq!(pair(&(), &()), "\n");
    }

    #[test]
    fn pairs_append_and_errors_leave_out_as_it_was() {
        let mut out = b"old\n".to_vec();
        write_pair(&1, &Shape::Circle(2.0), &mut out).unwrap();
        let err = write_pair("k", &(1, Custom::Fails), &mut out).unwrap_err();
        assert_eq!(err.to_string(), "value has no text form: no text here");
        assert!(write_pair(&Custom::Fails, "v", &mut out).is_err());
        write_text(&vec![Some(1), None], &mut out).unwrap();
        assert!(write_text(&("x", Custom::Fails), &mut out).is_err());
        assert_eq!(out, b"old\n1\t2\n1");
    }
}
