//! Heap cost of reading a large XML-RPC call, measured with dhat's heap profiler: the
//! reader must not hold a copy of the document's structure beside the values it builds.
//!
//! This is what bounds the gateway's memory on a large XML-RPC CDR (issue 8, defect 5): the
//! body is held while its values are built, so every byte the reader keeps beside the values
//! adds to the peak. A tree of the whole document (as the reader once built) costs about
//! 0.7 bytes per body byte more than the values themselves; this test fails on it.
//! No timing is measured, only bytes.

use ivrgate_wire::xmlrpc::{self, Value};
use ivrgate_wire::Limits;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// A Voicenter-shaped CDR of `members` string members of `size` bytes each.
fn cdr(members: usize, size: usize) -> String {
    let mut xml = String::with_capacity(members * (size + 80) + 512);
    xml.push_str(
        "<?xml version=\"1.0\"?><methodCall><methodName>CDR</methodName><params><param>\
         <value><struct><member><name>ivruniqueid</name><value><string>X1</string></value>\
         </member>",
    );
    let filler: String = "abcdefghij".chars().cycle().take(size).collect();
    for i in 0..members {
        xml.push_str(&format!(
            "<member><name>field{i:05}</name><value><string>{filler}</string></value></member>"
        ));
    }
    xml.push_str("</struct></value></param></params></methodCall>");
    xml
}

#[test]
fn a_large_call_costs_its_values_and_little_more() {
    let _profiler = dhat::Profiler::builder().testing().build();
    // 4,000 members of 1 KiB: the shape of the 50 MB benchmark, smaller.
    let body = cdr(4_000, 1024);
    let len = body.len();
    let limits = Limits {
        max_depth: 32,
        max_bytes: usize::MAX,
    };
    // dhat keeps one maximum for the whole run: building the body (one allocation of its
    // final size) set it to about the body's size, which what follows must exceed.
    let before = dhat::HeapStats::get();
    // The voicenter adapter's path: read the call, move its first parameter into JSON
    // fields, while the body is still held.
    let fields = xmlrpc::parse_call(&body, &limits)
        .map(|call| call.params.into_iter().next().map(Value::into_json))
        .unwrap_or_else(|e| panic!("the CDR does not parse: {e}"));
    let after = dhat::HeapStats::get();
    let members = fields
        .as_ref()
        .and_then(|f| f.as_object())
        .map_or(0, |m| m.len());
    assert_eq!(members, 4_001);
    let peak = after.max_bytes.saturating_sub(before.curr_bytes);
    let per_byte = peak as f64 / len as f64;
    println!("body {len} bytes; peak heap beyond it while read: {peak} ({per_byte:.2}/byte)");
    // The values' text is ~0.93 bytes per body byte; names, the member list and the JSON
    // map add a little. A tree of the document beside them would add ~0.7 more.
    assert!(
        per_byte < 1.25,
        "reading held {per_byte:.2} bytes per body byte beyond the body"
    );
}
