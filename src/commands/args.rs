//! Command arguments: one typed struct per command, deserialized with
//! `deny_unknown_fields` from the WebSocket's JSON `args` object or from an HTTP query
//! string (with `serde_html_form`), and the argument types several commands share.
//!
//! Every error names the argument (`argument \`top_n\`: …`, from `serde_path_to_error`)
//! and quotes at most [`DETAIL_PART_MAX_CHARS`] characters of what the client sent.
//!
//! The shared types ask the deserializer for what they want (an integer, a string), so a
//! query string's `top_n=5` is a number while JSON's `"top_n": "5"` stays a string (and is
//! refused): each format answers the hint in its own way.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde_json::Value;

use super::CommandError;

/// Longest piece of client input quoted back in an error's details, in characters.
pub const DETAIL_PART_MAX_CHARS: usize = 160;

/// Longest baseline name, in characters.
pub const NAME_MAX_CHARS: usize = 100;

/// A command's arguments as they arrived.
#[derive(Clone, Debug, PartialEq)]
pub enum Args {
    /// The WebSocket request's `args` object.
    Json(Value),
    /// An HTTP request's query string (without the `?`).
    Query(String),
}

impl Args {
    /// Deserializes the arguments into `T`; errors name the argument.
    ///
    /// # Errors
    /// [`CommandError::InvalidArgs`] naming the offending argument.
    pub fn parse<T: DeserializeOwned>(self) -> Result<T, CommandError> {
        match self {
            Self::Json(value) => serde_path_to_error::deserialize(value).map_err(invalid),
            Self::Query(query) => {
                if let Some(key) = repeated_key(&query) {
                    return Err(CommandError::InvalidArgs(format!(
                        "argument `{}`: given more than once",
                        shorten(&key, DETAIL_PART_MAX_CHARS)
                    )));
                }
                let parse = form_urlencoded::parse(query.as_bytes());
                serde_path_to_error::deserialize(serde_html_form::Deserializer::new(parse))
                    .map_err(invalid)
            }
        }
    }
}

/// The first key a query string gives twice.
fn repeated_key(query: &str) -> Option<String> {
    let mut seen: Vec<std::borrow::Cow<'_, str>> = Vec::new();
    for (k, _) in form_urlencoded::parse(query.as_bytes()) {
        if seen.contains(&k) {
            return Some(k.into_owned());
        }
        seen.push(k);
    }
    None
}

/// A deserialization error as the client sees it: `argument \`path\`: why`, both parts
/// shortened.
fn invalid<E: fmt::Display>(e: serde_path_to_error::Error<E>) -> CommandError {
    let path = shorten(&e.path().to_string(), DETAIL_PART_MAX_CHARS);
    // serde quotes the offending value or field name: keep a 10 KB one out of replies.
    let inner = shorten(&reword(e.into_inner().to_string()), DETAIL_PART_MAX_CHARS);
    if path == "." || path.is_empty() {
        CommandError::InvalidArgs(inner)
    } else {
        CommandError::InvalidArgs(format!("argument `{path}`: {inner}"))
    }
}

/// serde's "invalid type: boolean `true`, expected a string" in the order the range
/// errors use: what was expected first, then what came.
fn reword(message: String) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some((got, expected)) = message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split_once(", expected "))
        {
            return format!("expected {expected}, got {got}");
        }
    }
    message
}

/// `s` cut to `max` characters, with an ellipsis and the full length when cut.
pub fn shorten(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        s.to_string()
    } else {
        format!(
            "{}… ({n} characters)",
            s.chars().take(max).collect::<String>()
        )
    }
}

/// Arguments of commands that take none: any argument is an error.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// The bounds and wording of an integer argument.
pub trait Range {
    const MIN: u64;
    const MAX: u64;
    /// Said after the range in errors (e.g. ` (seconds)`), or empty.
    const UNIT: &'static str;
}

/// An integer argument within `R`'s bounds. JSON must give a number (booleans, floats
/// and strings are refused); a query string gives digits.
pub struct Bounded<R: Range>(u64, PhantomData<R>);

// By hand: derives would ask the same of `R`, a marker type.
impl<R: Range> Clone for Bounded<R> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<R: Range> Copy for Bounded<R> {}
impl<R: Range> fmt::Debug for Bounded<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Bounded").field(&self.0).finish()
    }
}
impl<R: Range> PartialEq for Bounded<R> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl<R: Range> Eq for Bounded<R> {}

impl<R: Range> Bounded<R> {
    /// The value (within bounds by construction).
    pub fn get(self) -> u64 {
        self.0
    }
}

struct BoundedVisitor<R>(PhantomData<R>);

impl<R: Range> BoundedVisitor<R> {
    fn refuse<E: de::Error>(got: impl fmt::Display) -> E {
        E::custom(format_args!(
            "expected an integer from {} to {}{}, got {}",
            R::MIN,
            R::MAX,
            R::UNIT,
            shorten(&got.to_string(), 40)
        ))
    }
}

impl<R: Range> Visitor<'_> for BoundedVisitor<R> {
    type Value = Bounded<R>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an integer from {} to {}{}", R::MIN, R::MAX, R::UNIT)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        if (R::MIN..=R::MAX).contains(&v) {
            Ok(Bounded(v, PhantomData))
        } else {
            Err(Self::refuse(v))
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(Self::refuse(v)),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        // As JSON writes it: 2.0 stays "2.0", so the client sees what it sent.
        Err(Self::refuse(Value::from(v)))
    }
}

impl<'de, R: Range> serde::Deserialize<'de> for Bounded<R> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_u64(BoundedVisitor(PhantomData))
    }
}

/// A baseline's name: 1 to [`NAME_MAX_CHARS`] characters, no control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Name(pub String);

struct NameVisitor;

impl Visitor<'_> for NameVisitor {
    type Value = Name;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Name, E> {
        let chars = v.chars().count();
        if chars == 0 {
            Err(E::custom("must not be empty"))
        } else if chars > NAME_MAX_CHARS {
            Err(E::custom(format_args!(
                "at most {NAME_MAX_CHARS} characters, got {chars}"
            )))
        } else if v.chars().any(char::is_control) {
            Err(E::custom("must not contain control characters"))
        } else {
            Ok(Name(v.to_owned()))
        }
    }
}

impl<'de> serde::Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_string(NameVisitor)
    }
}

/// For `#[serde(deserialize_with)]`: an optional [`Name`] as an `Option<String>` (absent
/// or `null` is `None`).
///
/// # Errors
/// As [`Name`]'s rules.
pub fn optional_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(<Option<Name> as serde::Deserialize>::deserialize(d)?.map(|n| n.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct A {
        top_n: Option<u32>,
    }

    #[test]
    fn parse_args_names_the_argument() {
        let e = Args::Json(json!({"top_n": "x"})).parse::<A>().unwrap_err();
        assert!(e.details().contains("top_n"), "{e:?}");
        let e = Args::Json(json!({"bogus": 1})).parse::<A>().unwrap_err();
        assert!(e.details().contains("bogus"), "{e:?}");
        let long = "k".repeat(10_000);
        let e = Args::Json(json!({ long.clone(): 1 }))
            .parse::<A>()
            .unwrap_err();
        assert!(
            e.details().len() < 400 && e.details().contains("kkkk"),
            "{e:?}"
        );
        let e = Args::Json(Value::String(long)).parse::<A>().unwrap_err();
        assert!(e.details().len() < 400, "{e:?}");
    }

    struct Ten;
    impl Range for Ten {
        const MIN: u64 = 1;
        const MAX: u64 = 10;
        const UNIT: &'static str = "";
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct B {
        n: Option<Bounded<Ten>>,
        #[serde(default, deserialize_with = "optional_name")]
        name: Option<String>,
    }

    #[test]
    fn a_query_and_json_fill_the_same_struct() {
        let q = Args::Query("n=5&name=a%20b".into()).parse::<B>().unwrap();
        assert_eq!(
            (q.n.map(Bounded::get), q.name.as_deref()),
            (Some(5), Some("a b"))
        );
        let j = Args::Json(json!({"n": 5, "name": "a b"}))
            .parse::<B>()
            .unwrap();
        assert_eq!(
            (j.n.map(Bounded::get), j.name.as_deref()),
            (Some(5), Some("a b"))
        );
        // Digits in a query are a name when the field is a name.
        let q = Args::Query("name=12".into()).parse::<B>().unwrap();
        assert_eq!(q.name.as_deref(), Some("12"));
        let none = Args::Query(String::new()).parse::<B>().unwrap();
        assert!(none.n.is_none() && none.name.is_none());
    }

    #[test]
    fn errors_name_the_argument_and_say_the_rule() {
        let details = |args: Args| args.parse::<B>().unwrap_err().details();
        assert_eq!(
            details(Args::Json(json!({"n": 11}))),
            "argument `n`: expected an integer from 1 to 10, got 11"
        );
        assert_eq!(
            details(Args::Json(json!({"n": true}))),
            "argument `n`: expected an integer from 1 to 10, got boolean `true`"
        );
        assert_eq!(
            details(Args::Json(json!({"n": "5"}))),
            "argument `n`: expected an integer from 1 to 10, got string \"5\""
        );
        assert_eq!(
            details(Args::Json(json!({"n": 2.0}))),
            "argument `n`: expected an integer from 1 to 10, got 2.0"
        );
        assert!(details(Args::Query("n=x".into())).starts_with("argument `n`: "));
        assert_eq!(
            details(Args::Query("n=1&n=2".into())),
            "argument `n`: given more than once"
        );
        assert!(details(Args::Query("bogus=1".into())).contains("bogus"));
        assert_eq!(
            details(Args::Json(json!({"name": ""}))),
            "argument `name`: must not be empty"
        );
        assert_eq!(
            details(Args::Json(json!({"name": "a\nb"}))),
            "argument `name`: must not contain control characters"
        );
        assert_eq!(
            details(Args::Json(json!({"name": "a".repeat(101)}))),
            "argument `name`: at most 100 characters, got 101"
        );
        assert_eq!(
            details(Args::Json(json!({"name": 5}))),
            "argument `name`: expected a string, got integer `5`"
        );
    }
}
