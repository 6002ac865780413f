//! A fuzz run of the whole API driven by its own OpenAPI description (security checklist
//! item 14): every documented operation gets generated paths, queries, headers and bodies
//! (right and wrong types, missing and unknown fields, strings past their limits, deep
//! nesting, raw non-JSON, wrong media types), sent by an administrator, a buyer and an
//! anonymous client. No answer may be a 5xx, every 4xx must be a problem document, and
//! no answer may leak a panic. A second run sends only requests the description allows
//! (every parameter and body within its schema): none of them may be refused as invalid.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flashsale::auth::extract::Role;
use flashsale::auth::session::COOKIE_NAME;
use futures::StreamExt;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::{Union, ValueTree};
use proptest::test_runner::TestRunner;
use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, COOKIE, HeaderValue};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, json_body};

/// Generated cases per operation; each case is sent by all three clients.
const CASES_PER_OPERATION: usize = 40;
/// Generated cases per method a path does not document (each must be a 405 problem).
const CASES_PER_UNDOCUMENTED_METHOD: usize = 3;
/// Requests in flight at once (the machine has two cores).
const CONCURRENCY: usize = 4;
/// Longest wait for the head of one answer, and again for its body.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Fewest requests a run must send, so that a fuzzer that skips everything fails.
const MIN_REQUESTS: usize = 3_000;
/// Fewest operations the description must yield.
const MIN_OPERATIONS: usize = 20;
/// Fewest 2xx answers: below this the fuzzer no longer reaches the handlers.
const MIN_SUCCESSES: usize = 100;
/// Characters of a path, header or body quoted in a failure report.
const QUOTED_CHARS: usize = 300;
/// Deepest nesting of generated JSON (the server's own bound is smaller).
const MAX_GENERATED_DEPTH: usize = 40;
/// Generated requests per documented operation in the run of allowed requests.
const ALLOWED_CASES_PER_OPERATION: usize = 30;
/// Fewest 2xx answers in the run of allowed requests.
const MIN_ALLOWED_SUCCESSES: usize = 150;
/// Answers that say a request is not what the description allows.
const REFUSED_AS_INVALID: &[u16] = &[400, 422];
/// Rate limits high enough that the fuzzer meets the handlers, not the limiter.
const UNLIMITED: u32 = 1_000_000;
/// The HTTP methods an OpenAPI path item may hold that this API uses.
const METHODS: &[&str] = &["get", "put", "post", "delete", "patch"];

/// One documented operation, as far as the fuzzer needs it.
#[derive(Debug, Clone)]
struct Operation {
    method: Method,
    path: String,
    query_params: Vec<String>,
    header_params: Vec<String>,
    /// Schema of each named parameter (path, query and header).
    parameter_schemas: BTreeMap<String, Value>,
    body_schema: Option<Value>,
    /// False for a method the path does not document.
    documented: bool,
}

impl Operation {
    /// Operations that end sessions or delete the product run last, so that they do not
    /// leave the other operations without a signed-in client or a live product.
    fn rank(&self) -> u8 {
        match () {
            _ if self.path.ends_with("/logout") => 3,
            _ if self.path.contains("/auth/") => 2,
            _ if self.method == Method::DELETE => 1,
            _ => 0,
        }
    }
}

fn resolve<'a>(spec: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str).and_then(|target| target.strip_prefix('#')) {
        Some(pointer) => spec.pointer(pointer).map_or(node, |target| resolve(spec, target)),
        None => node,
    }
}

fn http_method(name: &str) -> Method {
    Method::from_bytes(name.to_uppercase().as_bytes()).expect("an HTTP method")
}

/// Every operation of every path in the description, and every method it leaves out.
fn operations(spec: &Value) -> Vec<Operation> {
    let mut found = Vec::new();
    for (path, item) in spec["paths"].as_object().into_iter().flatten() {
        for (method, operation) in item.as_object().into_iter().flatten() {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let parameters: Vec<&Value> = [&item["parameters"], &operation["parameters"]]
                .into_iter()
                .filter_map(Value::as_array)
                .flatten()
                .map(|parameter| resolve(spec, parameter))
                .collect();
            let named = |place: &str| -> Vec<String> {
                parameters
                    .iter()
                    .filter(|p| p["in"] == place)
                    .filter_map(|p| p["name"].as_str().map(str::to_owned))
                    .collect()
            };
            let parameter_schemas = parameters
                .iter()
                .filter_map(|p| Some((p["name"].as_str()?.to_owned(), resolve(spec, &p["schema"]).clone())))
                .collect();
            let body_schema = resolve(spec, &operation["requestBody"])
                .pointer("/content/application~1json/schema")
                .map(|schema| resolve(spec, schema).clone());
            found.push(Operation {
                method: http_method(method),
                path: path.clone(),
                query_params: named("query"),
                header_params: named("header"),
                parameter_schemas,
                body_schema,
                documented: true,
            });
        }
        let undocumented = METHODS.iter().filter(|method| item.get(**method).is_none());
        found.extend(undocumented.map(|method| Operation {
            method: http_method(method),
            path: path.clone(),
            query_params: Vec::new(),
            header_params: Vec::new(),
            parameter_schemas: BTreeMap::new(),
            body_schema: None,
            documented: false,
        }));
    }
    found.sort_by_key(Operation::rank);
    found
}

fn edge_number() -> BoxedStrategy<Value> {
    let edges = vec![
        json!(1e308),
        json!(-1e308),
        json!(-1),
        json!(0),
        json!(1),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(1.5),
        json!(-0.0),
        json!(5e-324),
    ];
    prop_oneof![3 => select(edges), 1 => any::<i64>().prop_map(Value::from)].boxed()
}

/// Short strings that tend to break parsers and validators.
fn odd_string() -> BoxedStrategy<String> {
    let odd = vec!["", " ", "\u{0}", "a\u{0}b", "\n\t", "../../etc/passwd", "%00", "' OR 1=1 --", "{\"$gt\":\"\"}"];
    let odd = [odd, vec!["🔥", "\u{202e}", "null", "\u{feff}", "a@b", "@", "x@y@z"]].concat();
    prop_oneof![4 => "\\PC{0,24}", 2 => "[a-z0-9.+]{1,12}@[a-z]{1,8}\\.test", 2 => select(odd).prop_map(str::to_owned)]
        .boxed()
}

/// Strings of lengths around the documented limits and around the body limit.
fn long_string(max_body_bytes: usize, more_lengths: Vec<usize>) -> BoxedStrategy<String> {
    let lengths = [vec![199, 200, 201, 254, 255, 256, 4_999, 5_000, 5_001, max_body_bytes - 64], more_lengths].concat();
    let lengths = [lengths, vec![max_body_bytes + 1, 2 * max_body_bytes]].concat();
    (select(vec!['a', 'é', '🔥']), select(lengths)).prop_map(|(c, n)| c.to_string().repeat(n)).boxed()
}

/// Any JSON at all, with short strings (long ones come from the schema).
fn any_json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        edge_number(),
        odd_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("\\PC{0,8}", inner), 0..4)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Arrays and objects nested up to [`MAX_GENERATED_DEPTH`] levels.
fn deep_json() -> BoxedStrategy<Value> {
    (1..=MAX_GENERATED_DEPTH, prop::collection::vec(any::<bool>(), MAX_GENERATED_DEPTH))
        .prop_map(|(depth, as_array)| {
            as_array[..depth]
                .iter()
                .fold(json!(1), |inner, array| if *array { json!([inner]) } else { json!({ "a": inner }) })
        })
        .boxed()
}

/// A value for `schema`: usually one that looks right, sometimes one of another type.
fn for_schema(spec: &Value, schema: &Value, max_body_bytes: usize) -> BoxedStrategy<Value> {
    let wrong = prop_oneof![3 => any_json(), 1 => deep_json()];
    prop_oneof![4 => valid_looking(spec, schema, max_body_bytes), 1 => wrong].boxed()
}

/// A value of the schema's type(s), at and across its bounds.
fn valid_looking(spec: &Value, schema: &Value, max_body_bytes: usize) -> BoxedStrategy<Value> {
    let schema = resolve(spec, schema);
    if let Some(values) = schema["enum"].as_array().filter(|values| !values.is_empty()) {
        return prop_oneof![4 => select(values.clone()), 1 => odd_string().prop_map(Value::String)].boxed();
    }
    if let Some(value) = schema.get("const") {
        return Just(value.clone()).boxed();
    }
    let kinds: Vec<&str> = match &schema["type"] {
        Value::String(kind) => vec![kind.as_str()],
        Value::Array(kinds) => kinds.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let arms: Vec<BoxedStrategy<Value>> = kinds
        .into_iter()
        .map(|kind| match kind {
            "string" => string_for(schema, max_body_bytes),
            "integer" | "number" => integer_for(schema),
            "boolean" => any::<bool>().prop_map(Value::Bool).boxed(),
            "null" => Just(Value::Null).boxed(),
            "object" => object_for(spec, schema, max_body_bytes),
            "array" => prop::collection::vec(for_schema(spec, &schema["items"], max_body_bytes), 0..4)
                .prop_map(Value::Array)
                .boxed(),
            _ => any_json(),
        })
        .collect();
    if arms.is_empty() { any_json() } else { Union::new(arms).boxed() }
}

/// A string the schema accepts, as far as its pattern, format and length say: the
/// pattern when there is one, else the format (for `email`, any RFC 5321 mailbox of a
/// common shape, a dotless domain such as `localhost` included).
fn fitting_string(schema: &Value) -> BoxedStrategy<String> {
    let pattern = schema["pattern"].as_str().map(|p| p.trim_start_matches('^').trim_end_matches('$'));
    let plain = "[A-Za-z0-9][A-Za-z0-9 ]{0,39}";
    let min = schema["minLength"].as_u64().and_then(|n| usize::try_from(n).ok()).unwrap_or(0);
    let max = schema["maxLength"].as_u64().and_then(|n| usize::try_from(n).ok()).unwrap_or(usize::MAX);
    let strategy = match (pattern.map(proptest::string::string_regex), schema["format"].as_str()) {
        (Some(Ok(matching)), _) => matching.boxed(),
        (_, Some("email")) => prop_oneof![
            "[a-z0-9]{1,16}@example\\.test",
            "[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,24}@[a-z0-9-]{1,12}(\\.[a-z]{2,6}){1,2}",
            "[a-z0-9]{1,16}@[a-z]{1,10}",
        ]
        .boxed(),
        (_, Some("uuid")) => any::<u128>().prop_map(|n| Uuid::from_u128(n).to_string()).boxed(),
        _ => plain.boxed(),
    };
    strategy.prop_filter("a length the schema allows", move |text| (min..=max).contains(&text.chars().count())).boxed()
}

fn string_for(schema: &Value, max_body_bytes: usize) -> BoxedStrategy<Value> {
    let bounds: Vec<usize> = ["minLength", "maxLength"]
        .iter()
        .filter_map(|key| schema[*key].as_u64().and_then(|n| usize::try_from(n).ok()))
        .flat_map(|n| [n.saturating_sub(1), n, n + 1])
        .collect();
    let long = long_string(max_body_bytes, bounds);
    prop_oneof![4 => fitting_string(schema), 2 => odd_string(), 1 => long].prop_map(Value::String).boxed()
}

/// A value that satisfies the schema (types, ranges, formats, patterns, required fields),
/// so that requests also get past validation into the handlers' own logic.
fn conforming(spec: &Value, schema: &Value) -> BoxedStrategy<Value> {
    let schema = resolve(spec, schema);
    if let Some(values) = schema["enum"].as_array().filter(|values| !values.is_empty()) {
        return select(values.clone()).boxed();
    }
    if let Some(value) = schema.get("const") {
        return Just(value.clone()).boxed();
    }
    if let Value::Array(kinds) = &schema["type"] {
        let arms: Vec<BoxedStrategy<Value>> = kinds
            .iter()
            .filter_map(Value::as_str)
            .map(|kind| {
                let mut one = schema.clone();
                one["type"] = json!(kind);
                conforming(spec, &one)
            })
            .collect();
        return if arms.is_empty() { Just(Value::Null).boxed() } else { Union::new(arms).boxed() };
    }
    match schema["type"].as_str().unwrap_or("null") {
        "string" => fitting_string(schema).prop_map(Value::String).boxed(),
        "integer" | "number" => {
            let low = schema["minimum"].as_i64().unwrap_or(i64::MIN);
            let high = schema["maximum"].as_i64().unwrap_or(i64::MAX).max(low);
            (low..=high, any::<bool>()).prop_map(|(n, as_fraction)| whole_number(n, as_fraction)).boxed()
        }
        "boolean" => any::<bool>().prop_map(Value::Bool).boxed(),
        "object" => {
            let required: Vec<&str> =
                schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = schema["properties"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(name, property)| {
                    let is_required = required.contains(&name.as_str());
                    let name = name.clone();
                    let present = conforming(spec, property).prop_map(move |value| Some((name.clone(), value)));
                    if is_required { present.boxed() } else { prop_oneof![present, Just(None)].boxed() }
                })
                .collect();
            let min_properties = schema["minProperties"].as_u64().and_then(|n| usize::try_from(n).ok()).unwrap_or(0);
            fields
                .prop_map(|fields| Value::Object(fields.into_iter().flatten().collect()))
                .prop_filter("as many properties as the schema asks", move |object| {
                    object.as_object().is_some_and(|fields| fields.len() >= min_properties)
                })
                .prop_map(keep_prose_rules)
                .boxed()
        }
        "array" => prop::collection::vec(conforming(spec, &schema["items"]), 0..3).prop_map(Value::Array).boxed(),
        _ => Just(Value::Null).boxed(),
    }
}

/// An integer as JSON Schema's `integer` has it: written plainly or, when exact as a
/// double, with a fraction (`3.0` is the integer 3).
fn whole_number(n: i64, as_fraction: bool) -> Value {
    const EXACT_IN_A_DOUBLE: i64 = 1 << 53;
    if as_fraction && n.abs() <= EXACT_IN_A_DOUBLE {
        // Exact: |n| is at most 2^53.
        #[allow(clippy::cast_precision_loss)]
        let fraction = n as f64;
        json!(fraction)
    } else {
        json!(n)
    }
}

/// The one rule of the description that JSON Schema cannot state, since it compares two
/// fields: a sale window's end comes after its start (`CreateProduct`, `UpdateProduct`).
/// A generated window that breaks it is turned around.
fn keep_prose_rules(mut object: Value) -> Value {
    let bound = |object: &Value, field: &str| object[field].as_f64().filter(|v| v.fract() == 0.0);
    if let (Some(starts), Some(ends)) = (bound(&object, "sale_starts_at_ms"), bound(&object, "sale_ends_at_ms")) {
        if ends <= starts {
            let (starts, ends) = if ends < starts { (ends, starts) } else { (starts - 1.0, ends) };
            if starts >= 1.0 {
                object["sale_starts_at_ms"] = json!(starts);
                object["sale_ends_at_ms"] = json!(ends);
            } else {
                object["sale_starts_at_ms"] = Value::Null;
            }
        }
    }
    object
}

/// A conforming object with one property replaced by an odd or mistyped value: the
/// handler gets past every other check and meets that one value.
fn one_odd_field(spec: &Value, schema: &Value, max_body_bytes: usize) -> BoxedStrategy<Value> {
    let arms: Vec<BoxedStrategy<Value>> = schema["properties"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, property)| {
            let name = name.clone();
            (conforming(spec, schema), for_schema(spec, property, max_body_bytes))
                .prop_map(move |(mut object, value)| {
                    object[name.as_str()] = value;
                    object
                })
                .boxed()
        })
        .collect();
    if arms.is_empty() { conforming(spec, schema) } else { Union::new(arms).boxed() }
}

fn integer_for(schema: &Value) -> BoxedStrategy<Value> {
    let low = schema["minimum"].as_i64().unwrap_or(i64::MIN);
    let high = schema["maximum"].as_i64().unwrap_or(i64::MAX).max(low);
    let edges = vec![low.saturating_sub(1), low, high, high.saturating_add(1)];
    prop_oneof![4 => (low..=high).prop_map(Value::from), 1 => select(edges).prop_map(Value::from), 1 => edge_number()]
        .boxed()
}

/// An object with each property present (more often if required) or missing, and at
/// times a field the schema does not know.
fn object_for(spec: &Value, schema: &Value, max_body_bytes: usize) -> BoxedStrategy<Value> {
    let required: Vec<&str> = schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = schema["properties"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, property)| {
            let keep = if required.contains(&name.as_str()) { 9 } else { 5 };
            let name = name.clone();
            let present = for_schema(spec, property, max_body_bytes).prop_map(move |value| Some((name.clone(), value)));
            prop_oneof![keep => present, 1 => Just(None)].boxed()
        })
        .collect();
    let unknown = prop::option::weighted(0.15, ("[a-z_]{1,12}", any_json()));
    (fields, unknown)
        .prop_map(|(fields, unknown)| Value::Object(fields.into_iter().flatten().chain(unknown).collect()))
        .boxed()
}

/// A request body: its `Content-Type` (none when absent) and its bytes.
#[derive(Debug, Clone, Default)]
struct Body {
    content_type: Option<Vec<u8>>,
    bytes: Vec<u8>,
}

fn as_json(bytes: Vec<u8>) -> Body {
    Body { content_type: Some(b"application/json".to_vec()), bytes }
}

fn json_request_body(value: Value) -> Body {
    as_json(serde_json::to_vec(&value).expect("serialising generated JSON"))
}

/// Bytes that are not a JSON document, or not one the parser accepts.
fn not_json() -> BoxedStrategy<Vec<u8>> {
    let fixed = ["", "{", "}", "{\"email\": ", "[1,2", "nul", "\"open", "{\"a\":1,}", "1e400", "-", "{'a':1}"];
    let fixed =
        [&fixed[..], &["\u{feff}{}", "{\"a\":\"\\ud800\"}", "<xml/>", "a=1&b=2", "{\"a\":1}{\"b\":2}", "NaN"]].concat();
    let mut fixed: Vec<Vec<u8>> = fixed.iter().map(|text| text.as_bytes().to_vec()).collect();
    fixed.push(format!("{}1{}", "[".repeat(200), "]".repeat(200)).into_bytes());
    fixed.push("[".repeat(5_000).into_bytes());
    fixed.push(vec![0xff, 0xfe, 0x00]);
    prop_oneof![
        3 => select(fixed),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => "\\PC{0,64}".prop_map(String::into_bytes),
    ]
    .boxed()
}

fn wrong_content_type() -> BoxedStrategy<Option<Vec<u8>>> {
    let types: Vec<Option<&'static [u8]>> = vec![
        None,
        Some(b"text/plain"),
        Some(b"application/x-www-form-urlencoded"),
        Some(b"multipart/form-data; boundary=x"),
        Some(b""),
        Some(b";;"),
        Some(b"application/"),
        Some(b"application/json; charset=utf-16"),
        Some(b"application/vnd.flashsale+json"),
        Some(b"APPLICATION/JSON"),
        Some(b"application/jsonx"),
        Some("appl\u{e9}cation/json".as_bytes()),
    ];
    select(types).prop_map(|content_type| content_type.map(<[u8]>::to_vec)).boxed()
}

/// A body with one string field around, at and past the body limit.
fn huge_body(schema: &Value, max_body_bytes: usize) -> BoxedStrategy<Body> {
    let mut names: Vec<String> =
        schema["properties"].as_object().into_iter().flatten().map(|(n, _)| n.clone()).collect();
    names.push("x".into());
    let lengths = vec![max_body_bytes - 64, max_body_bytes - 8, max_body_bytes, max_body_bytes + 1, 6 * max_body_bytes];
    (select(names), select(lengths))
        .prop_map(|(name, length)| {
            json_request_body(Value::Object(Map::from_iter([(name, json!("a".repeat(length)))])))
        })
        .boxed()
}

fn body_strategy(spec: &Value, operation: &Operation, max_body_bytes: usize) -> BoxedStrategy<Body> {
    let Some(schema) = &operation.body_schema else {
        return prop_oneof![6 => Just(Body::default()), 1 => any_json().prop_map(json_request_body), 1 => not_json().prop_map(as_json)]
            .boxed();
    };
    let mistyped = (valid_looking(spec, schema, max_body_bytes), wrong_content_type())
        .prop_map(|(value, content_type)| Body { content_type, ..json_request_body(value) });
    prop_oneof![
        4 => conforming(spec, schema).prop_map(json_request_body),
        4 => one_odd_field(spec, schema, max_body_bytes).prop_map(json_request_body),
        6 => valid_looking(spec, schema, max_body_bytes).prop_map(json_request_body),
        2 => mistyped,
        2 => any_json().prop_map(json_request_body),
        2 => deep_json().prop_map(json_request_body),
        2 => not_json().prop_map(as_json),
        1 => huge_body(schema, max_body_bytes),
        1 => Just(Body::default()),
    ]
    .boxed()
}

/// Every byte outside the URL's unreserved set, percent-encoded.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn path_segment(real_ids: Vec<String>) -> BoxedStrategy<String> {
    let odd = vec!["..", "%00", ".", "%2e%2e", "%2F", "%FF", "%", "%%", "a%00b", "%20", "{id}", "null", "-1", "0"];
    let odd = [odd, vec!["00000000-0000-0000-0000-000000000000", "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"]].concat();
    prop_oneof![
        4 => select(real_ids),
        3 => any::<u128>().prop_map(|n| Uuid::from_u128(n).to_string()),
        1 => any::<u128>().prop_map(|n| Uuid::from_u128(n).simple().to_string()),
        2 => "\\PC{1,24}".prop_map(|text| percent_encode(&text)),
        2 => select(odd).prop_map(str::to_owned),
        1 => (select(vec!['a', 'é', '🔥']), 256..1_200usize).prop_map(|(c, n)| percent_encode(&c.to_string().repeat(n))),
    ]
    .boxed()
}

fn query_strategy(declared: &[String]) -> BoxedStrategy<String> {
    let known = if declared.is_empty() { vec!["limit".to_owned(), "after".to_owned()] } else { declared.to_vec() };
    let key = prop_oneof![3 => select(known), 1 => "[a-z_]{1,10}", 1 => "\\PC{1,8}"];
    let odd_values = vec!["", "-1", "0", "1", "200", "201", "9223372036854775808", "1e308", "true", "null", "%"];
    let value = prop_oneof![
        2 => select(odd_values).prop_map(str::to_owned),
        2 => any::<u128>().prop_map(|n| Uuid::from_u128(n).to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        2 => "\\PC{0,16}",
    ];
    let pairs = prop::collection::vec((key, value), 0..4).prop_map(|pairs| {
        pairs.iter().map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v))).collect::<Vec<_>>().join("&")
    });
    let raw = vec!["%", "%ZZ", "a=%FF", "&&&", "=", "limit=1&limit=2", "after=", "limit=", "limit=-1", "product_id=x"];
    prop_oneof![3 => pairs, 1 => select(raw).prop_map(str::to_owned)].boxed()
}

/// Values of a header parameter (the only one is `Idempotency-Key`).
fn header_value() -> BoxedStrategy<Option<Vec<u8>>> {
    let odd = vec![
        Vec::new(),
        vec![b'k'; 300],
        vec![b'k'; 255],
        vec![b'k'; 256],
        "ключ-🔑".as_bytes().to_vec(),
        b"has space".to_vec(),
        b"\"quoted\"".to_vec(),
    ];
    prop_oneof![
        1 => Just(None),
        2 => select(odd).prop_map(Some),
        3 => "[!-~]{1,40}".prop_map(|key| Some(key.into_bytes())),
        3 => any::<u128>().prop_map(|n| Some(Uuid::from_u128(n).to_string().into_bytes())),
    ]
    .boxed()
}

/// A session cookie the anonymous client makes up.
fn made_up_cookie() -> BoxedStrategy<Option<String>> {
    let odd = vec![format!("{COOKIE_NAME}="), "=".into(), ";;;".into(), format!("{COOKIE_NAME}={}", "a".repeat(4_000))];
    prop_oneof![
        6 => Just(None),
        1 => "[A-Za-z0-9_=.-]{0,64}".prop_map(|id| Some(format!("{COOKIE_NAME}={id}"))),
        1 => select(odd).prop_map(Some),
    ]
    .boxed()
}

/// A header's name and raw value.
type Header = (String, Vec<u8>);

/// One generated request, before it is sent by each client.
#[derive(Debug, Clone)]
struct Case {
    path: String,
    query: String,
    headers: Vec<Header>,
    cookie: Option<String>,
    body: Body,
}

/// What each case is generated from.
#[derive(Debug)]
struct Inputs {
    spec: Value,
    real_ids: Vec<String>,
    max_body_bytes: usize,
}

/// The path template with each `{placeholder}` replaced by the next segment.
fn fill_path(template: &str, segments: Vec<String>) -> String {
    let mut values = segments.into_iter();
    template
        .split('/')
        .map(|segment| if segment.starts_with('{') { values.next().unwrap_or_default() } else { segment.into() })
        .collect::<Vec<_>>()
        .join("/")
}

fn case_strategy(inputs: &Inputs, operation: &Operation) -> BoxedStrategy<Case> {
    let template = operation.path.clone();
    let placeholders = template.split('/').filter(|segment| segment.starts_with('{')).count();
    let segments: Vec<BoxedStrategy<String>> =
        (0..placeholders).map(|_| path_segment(inputs.real_ids.clone())).collect();
    let headers: Vec<BoxedStrategy<Option<Header>>> = operation
        .header_params
        .iter()
        .map(|name| {
            let name = name.clone();
            header_value().prop_map(move |value| value.map(|value| (name.clone(), value))).boxed()
        })
        .collect();
    let body = body_strategy(&inputs.spec, operation, inputs.max_body_bytes);
    (segments, query_strategy(&operation.query_params), headers, made_up_cookie(), body)
        .prop_map(move |(segments, query, headers, cookie, body)| {
            let path = fill_path(&template, segments);
            Case { path, query, headers: headers.into_iter().flatten().collect(), cookie, body }
        })
        .boxed()
}

/// A request the description allows: real ids in the path, each optional query parameter
/// present or not, headers and the body within their schemas. Each case gets its own
/// `Idempotency-Key` (the description says a key sent again with another request is 422).
fn allowed_case_strategy(inputs: &Inputs, operation: &Operation) -> BoxedStrategy<Case> {
    let template = operation.path.clone();
    let placeholders = template.split('/').filter(|segment| segment.starts_with('{')).count();
    let segments = prop::collection::vec(select(inputs.real_ids.clone()), placeholders);
    let schema_of = |name: &str| operation.parameter_schemas.get(name).cloned().unwrap_or(Value::Null);
    let query: Vec<BoxedStrategy<Option<String>>> = operation
        .query_params
        .iter()
        .map(|name| {
            let name = name.clone();
            let value = conforming(&inputs.spec, &schema_of(&name))
                .prop_map(move |value| Some(format!("{name}={}", percent_encode(&query_text(&value)))));
            prop_oneof![value, Just(None)].boxed()
        })
        .collect();
    let headers: Vec<BoxedStrategy<Header>> = operation
        .header_params
        .iter()
        .map(|name| {
            let name = name.clone();
            fitting_string(&schema_of(&name)).prop_map(move |value| (name.clone(), value.into_bytes())).boxed()
        })
        .collect();
    let body = match &operation.body_schema {
        Some(schema) => conforming(&inputs.spec, schema).prop_map(json_request_body).boxed(),
        None => Just(Body::default()).boxed(),
    };
    (segments, query, headers, body)
        .prop_map(move |(segments, query, headers, body)| {
            let path = fill_path(&template, segments);
            let query = query.into_iter().flatten().collect::<Vec<_>>().join("&");
            Case { path, query, headers, cookie: None, body }
        })
        .boxed()
}

/// A query parameter's value as text: strings as they are, whole numbers in decimal
/// digits (a query has no JSON number syntax: `limit=5`, not `limit=5.0`).
fn query_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => {
            number.as_f64().filter(|_| number.is_f64()).map_or(number.to_string(), |f| format!("{f:.0}"))
        }
        other => other.to_string(),
    }
}

/// A client of the fuzz run; only the anonymous one sends made-up cookies.
#[derive(Debug)]
struct Client {
    name: &'static str,
    http: reqwest::Client,
    anonymous: bool,
}

/// What came back: enough to judge it.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

fn quote(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).chars().take(QUOTED_CHARS).collect()
}

fn url(base: &str, case: &Case) -> String {
    if case.query.is_empty() { format!("{base}{}", case.path) } else { format!("{base}{}?{}", case.path, case.query) }
}

fn describe(client: &Client, operation: &Operation, case: &Case) -> String {
    let mut headers: Vec<String> =
        case.headers.iter().map(|(name, value)| format!("{name}: {}", quote(value))).collect();
    if let Some(content_type) = &case.body.content_type {
        headers.push(format!("content-type: {}", quote(content_type)));
    }
    if let (true, Some(cookie)) = (client.anonymous, &case.cookie) {
        headers.push(format!("cookie: {}", quote(cookie.as_bytes())));
    }
    let target = quote(url("", case).as_bytes());
    format!("[{}] {} {target} headers {headers:?} body {:?}", client.name, operation.method, quote(&case.body.bytes))
}

/// The answer (or why there was none) and whether it took a second try.
type Outcome = (Result<Answer, String>, bool);

/// Why a request got no answer to judge.
#[derive(Debug)]
enum NoAnswer {
    /// The connection broke: worth one more try (see [`send`]).
    Broken(String),
    /// Anything else (a timeout, a request that could not be built).
    Other(String),
}

/// An error with its chain of causes, for the report.
fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        text.push_str(&format!(": {inner}"));
        cause = inner.source();
    }
    text
}

async fn send_once(base: &str, client: &Client, operation: &Operation, case: &Case) -> Result<Answer, NoAnswer> {
    let mut request = client.http.request(operation.method.clone(), url(base, case));
    for (name, value) in &case.headers {
        let value =
            HeaderValue::from_bytes(value).map_err(|err| NoAnswer::Other(format!("unsendable header: {err}")))?;
        request = request.header(name.as_str(), value);
    }
    if let (true, Some(cookie)) = (client.anonymous, &case.cookie) {
        request = request.header(COOKIE, cookie.as_str());
    }
    if let Some(content_type) = &case.body.content_type {
        let value = HeaderValue::from_bytes(content_type)
            .map_err(|err| NoAnswer::Other(format!("unsendable header: {err}")))?;
        request = request.header(CONTENT_TYPE, value);
    }
    if !case.body.bytes.is_empty() {
        request = request.body(case.body.bytes.clone());
    }
    let response = tokio::time::timeout(REQUEST_TIMEOUT, request.send())
        .await
        .map_err(|_| NoAnswer::Other("no answer within the timeout".into()))?
        .map_err(|err| NoAnswer::Broken(format!("no answer: {}", with_causes(&err))))?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    // An event stream never ends: its status and media type are all there is to judge.
    if content_type.starts_with("text/event-stream") {
        return Ok(Answer { status, content_type, body: Vec::new() });
    }
    let body = tokio::time::timeout(REQUEST_TIMEOUT, response.bytes())
        .await
        .map_err(|_| NoAnswer::Other("the body did not arrive within the timeout".into()))?
        .map_err(|err| NoAnswer::Broken(format!("the body broke off: {}", with_causes(&err))))?;
    Ok(Answer { status, content_type, body: body.to_vec() })
}

/// Sends the case, and once more if the connection broke. When the server answers
/// without reading a body (a 403 before the JSON is parsed, a 413) it closes that
/// keep-alive connection, and the client may already have picked it from its pool for
/// the next request: a race of HTTP/1.1 itself, not a fault of the server. A second
/// break is reported, and the test bounds how many requests needed a second try.
async fn send(base: &str, client: &Client, operation: &Operation, case: &Case) -> Outcome {
    match send_once(base, client, operation, case).await {
        Ok(answer) => (Ok(answer), false),
        Err(NoAnswer::Other(error)) => (Err(error), false),
        Err(NoAnswer::Broken(_)) => match send_once(base, client, operation, case).await {
            Ok(answer) => (Ok(answer), true),
            Err(NoAnswer::Broken(error) | NoAnswer::Other(error)) => (Err(format!("twice: {error}")), true),
        },
    }
}

/// What is wrong with an answer, if anything.
fn fault(answer: &Answer) -> Option<String> {
    let text = String::from_utf8_lossy(&answer.body);
    if ["panicked", "stack backtrace", "RUST_BACKTRACE"].iter().any(|marker| text.contains(marker)) {
        return Some("the answer leaks a panic or a backtrace".into());
    }
    if answer.status >= 500 {
        return Some(format!("a {} answer", answer.status));
    }
    if !(400..500).contains(&answer.status) {
        return None;
    }
    let media_type = answer.content_type.split(';').next().unwrap_or_default().trim();
    if media_type != "application/problem+json" {
        return Some(format!("a {} that is not problem+json (content-type {:?})", answer.status, answer.content_type));
    }
    let problem = json_body(&answer.body);
    let complete = problem["type"].is_string() && problem["title"].is_string();
    if !complete || problem["status"].as_u64() != Some(u64::from(answer.status)) {
        return Some(format!("a {} whose problem document lacks type, title or the same status", answer.status));
    }
    None
}

/// Counts and failures of the whole run.
#[derive(Debug, Default)]
struct Tally {
    requests: usize,
    retried: usize,
    statuses: BTreeMap<u16, usize>,
    failures: Vec<String>,
    /// Statuses that are failures in this run besides those [`fault`] finds.
    refused: &'static [u16],
}

impl Tally {
    /// Counts the answer, keeps it if it is faulty, and returns its status (0 for none).
    fn record(&mut self, request: String, (result, retried): Outcome) -> u16 {
        self.requests += 1;
        self.retried += usize::from(retried);
        match result {
            Ok(answer) => {
                *self.statuses.entry(answer.status).or_default() += 1;
                let refused = self
                    .refused
                    .contains(&answer.status)
                    .then(|| format!("a {} for a request the description allows", answer.status));
                if let Some(fault) = fault(&answer).or(refused) {
                    let body = quote(&answer.body);
                    self.failures.push(format!("{fault}\n    request: {request}\n    answer: {body}"));
                }
                answer.status
            }
            Err(error) => {
                self.failures.push(format!("{error}\n    request: {request}"));
                0
            }
        }
    }

    fn count(&self, statuses: std::ops::Range<u16>) -> usize {
        self.statuses.range(statuses).map(|(_, n)| n).sum()
    }
}

async fn fuzz_operation(base: &str, clients: &[Client], operation: &Operation, cases: &[Case], tally: &mut Tally) {
    let jobs = cases.iter().flat_map(|case| clients.iter().map(move |client| (client, case)));
    let answers: Vec<(String, Outcome)> =
        futures::stream::iter(jobs)
            .map(|(client, case)| async move {
                (describe(client, operation, case), send(base, client, operation, case).await)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for (request, result) in answers {
        *statuses.entry(tally.record(request, result)).or_default() += 1;
    }
    if operation.documented {
        eprintln!("fuzz: {} {} -> {statuses:?}", operation.method, operation.path);
    }
}

/// The product and an order of it, so that generated paths also name real records.
async fn real_ids(app: &TestApp, buyer: &reqwest::Client) -> Vec<String> {
    let product = app.create_product(5, true).await;
    let (status, _, body) = app.buy(buyer, product, &Uuid::new_v4().to_string()).await;
    assert_eq!(status, 201, "the first purchase: {}", String::from_utf8_lossy(&body));
    let order = json_body(&body)["order_id"].as_str().expect("an order id").to_owned();
    vec![product.to_string(), order]
}

async fn spawn_unlimited() -> TestApp {
    TestApp::spawn_with(|config| {
        let limits = &mut config.limits;
        limits.login_per_ip_per_min = UNLIMITED;
        limits.login_per_account_per_min = UNLIMITED;
        limits.register_per_ip_per_min = UNLIMITED;
        limits.otp_per_user_per_min = UNLIMITED;
        limits.purchase_per_user_per_min = UNLIMITED;
        limits.purchase_per_ip_per_min = UNLIMITED;
        limits.reads_per_ip_per_min = UNLIMITED;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzing_every_documented_operation_gets_no_5xx_and_only_problem_documents_for_4xx() {
    let app = spawn_unlimited().await;
    let (admin, _) = app.verified_buyer(Role::Admin).await;
    let (buyer, _) = app.verified_buyer(Role::Buyer).await;
    let real_ids = real_ids(&app, &buyer).await;
    let clients = [
        Client { name: "admin", http: admin, anonymous: false },
        Client { name: "buyer", http: buyer, anonymous: false },
        Client { name: "anonymous", http: app.client(), anonymous: true },
    ];
    let spec_response = clients[2].http.get(app.url("/openapi.json")).send().await.expect("GET /openapi.json");
    let spec: Value = spec_response.json().await.expect("the description is JSON");
    let operations = operations(&spec);
    let documented = operations.iter().filter(|operation| operation.documented).count();
    assert!(documented >= MIN_OPERATIONS, "only {documented} operations in the description");
    let inputs = Inputs { spec, real_ids, max_body_bytes: app.config.max_body_bytes };

    let started = Instant::now();
    let mut runner = TestRunner::deterministic();
    let mut tally = Tally::default();
    for operation in &operations {
        let strategy = case_strategy(&inputs, operation);
        let count = if operation.documented { CASES_PER_OPERATION } else { CASES_PER_UNDOCUMENTED_METHOD };
        let cases: Vec<Case> =
            (0..count).map(|_| strategy.new_tree(&mut runner).expect("generating a case").current()).collect();
        fuzz_operation(&app.base, &clients, operation, &cases, &mut tally).await;
    }
    eprintln!(
        "fuzz: {documented} operations (and {} undocumented methods), {} requests ({} sent twice after a broken connection) in {:.1} s, answers by status {:?}",
        operations.len() - documented,
        tally.requests,
        tally.retried,
        started.elapsed().as_secs_f64(),
        tally.statuses
    );

    assert!(tally.requests >= MIN_REQUESTS, "only {} requests were sent", tally.requests);
    assert!(tally.count(200..300) >= MIN_SUCCESSES, "too few 2xx answers: {:?}", tally.statuses);
    assert_eq!(tally.count(503..504), 0, "no backend is down, yet some answers were 503");
    assert!(tally.retried <= tally.requests / 100, "{} requests met a broken connection", tally.retried);
    let report = tally.failures.join("\n");
    assert!(tally.failures.is_empty(), "{} of {} requests failed:\n{report}", tally.failures.len(), tally.requests);
}

/// Every request the description allows is answered without a 400 or a 422, whoever
/// sends it: the description says exactly what the server accepts (issue: the schema
/// once allowed passwords of any length, `user@localhost`, restocks past the stock limit).
/// Sent by an administrator and a buyer; state the request does not control (a restock
/// past the limit, an update against the stored window) is a 409, not a 422.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_description_allows_are_never_refused_as_invalid() {
    let app = spawn_unlimited().await;
    let (admin, _) = app.verified_buyer(Role::Admin).await;
    let (buyer, _) = app.verified_buyer(Role::Buyer).await;
    let real_ids = real_ids(&app, &buyer).await;
    let clients = [
        Client { name: "admin", http: admin, anonymous: false },
        Client { name: "buyer", http: buyer, anonymous: false },
    ];
    let spec_response = app.client().get(app.url("/openapi.json")).send().await.expect("GET /openapi.json");
    let spec: Value = spec_response.json().await.expect("the description is JSON");
    let operations: Vec<Operation> = operations(&spec).into_iter().filter(|operation| operation.documented).collect();
    assert!(operations.len() >= MIN_OPERATIONS, "only {} operations in the description", operations.len());
    let inputs = Inputs { spec, real_ids, max_body_bytes: app.config.max_body_bytes };

    let mut runner = TestRunner::deterministic();
    let mut tally = Tally { refused: REFUSED_AS_INVALID, ..Tally::default() };
    let mut keys = std::collections::HashSet::new();
    for operation in &operations {
        let strategy = allowed_case_strategy(&inputs, operation);
        let mut cases = Vec::with_capacity(ALLOWED_CASES_PER_OPERATION);
        while cases.len() < ALLOWED_CASES_PER_OPERATION {
            let case: Case = strategy.new_tree(&mut runner).expect("generating a case").current();
            if case.headers.iter().all(|(_, value)| keys.insert(value.clone())) {
                cases.push(case);
            }
        }
        fuzz_operation(&app.base, &clients, operation, &cases, &mut tally).await;
    }
    eprintln!("allowed requests: {} sent, answers by status {:?}", tally.requests, tally.statuses);

    assert!(tally.count(200..300) >= MIN_ALLOWED_SUCCESSES, "too few 2xx answers: {:?}", tally.statuses);
    assert!(tally.retried <= tally.requests / 100, "{} requests met a broken connection", tally.retried);
    let report = tally.failures.join("\n");
    assert!(tally.failures.is_empty(), "{} of {} requests failed:\n{report}", tally.failures.len(), tally.requests);
}
