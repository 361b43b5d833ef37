//! A hand-built component whose result points many strings at the same bytes: the canonical
//! ABI allows it, no SDK produces it, and copying it naively makes a small plugin cost the host
//! gigabytes. The host must hold no more than the output budget of it, however the strings are
//! shared, and refuse the result with a reason naming the limit.
//!
//! This file is its own test binary with a counting allocator, so the bytes the host allocates
//! during the call are measured exactly rather than read from a noisy RSS.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};

use conduit_model::{Operation, Phase, RecordBatch, Row, Value};
use conduit_plugin_host::{Limits, PluginError, PluginHost, PluginRef, World};

/// The system allocator, counting the bytes live now and the most live since the last reset.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { System.dealloc(pointer, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Tests here run one at a time, so one's allocations never count in the other's peak.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A linear-memory image laid out by the canonical ABI (memory32), with strings interned:
/// the same text is stored once and every reference points at it.
#[derive(Default)]
struct Image {
    bytes: Vec<u8>,
    strings: HashMap<String, (u32, u32)>,
}

impl Image {
    fn alloc(&mut self, size: usize, align: usize) -> u32 {
        let start = self.bytes.len().next_multiple_of(align);
        self.bytes.resize(start + size, 0);
        u32::try_from(start).unwrap()
    }

    fn put_u32(&mut self, at: u32, value: u32) {
        let at = at as usize;
        self.bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }

    fn put_u8(&mut self, at: u32, value: u8) {
        self.bytes[at as usize] = value;
    }

    fn string(&mut self, text: &str) -> (u32, u32) {
        if let Some(found) = self.strings.get(text) {
            return *found;
        }
        let at = self.alloc(text.len(), 1);
        self.bytes[at as usize..].copy_from_slice(text.as_bytes());
        let slot = (at, u32::try_from(text.len()).unwrap());
        self.strings.insert(text.to_owned(), slot);
        slot
    }

    fn put_string(&mut self, at: u32, text: &str) {
        let (pointer, length) = self.string(text);
        self.put_u32(at, pointer);
        self.put_u32(at + 4, length);
    }
}

/// `result<mapped-batch, string>` for one input: one write of `records` records to a
/// Campaign profile, each setting `email` `fields` times to the same `value`.
fn aliased_result(image: &mut Image, records: u32, fields: u32, value: &str) -> u32 {
    // A value variant: discriminant at 0, payload at 8 (s64/f64 align it), 32 bytes;
    // a (u32, value) tuple: 40 bytes, aligned to 8. `text` is case 4.
    let field_list = image.alloc(40 * fields as usize, 8);
    for index in 0..fields {
        let field = field_list + 40 * index;
        image.put_u32(field, 0);
        image.put_u8(field + 8, 4);
        image.put_string(field + 16, value);
    }
    // output-record: target u32, key string, op u8 (upsert = 0), fields list; 24 bytes.
    let record_list = image.alloc(24 * records as usize, 4);
    for index in 0..records {
        let record = record_list + 24 * index;
        image.put_u32(record, 0);
        image.put_string(record + 4, &format!("c{index}"));
        image.put_u8(record + 12, 0);
        image.put_u32(record + 16, field_list);
        image.put_u32(record + 20, fields);
    }
    // outcome: discriminant (write = 0) and a list; 12 bytes.
    let outcome = image.alloc(12, 4);
    image.put_u8(outcome, 0);
    image.put_u32(outcome + 4, record_list);
    image.put_u32(outcome + 8, records);
    // target: system (campaign = 1), table, key field; 20 bytes.
    let target = image.alloc(20, 4);
    image.put_u8(target, 1);
    image.put_string(target + 4, "profile");
    image.put_string(target + 12, "email");
    let column = image.alloc(8, 4);
    image.put_string(column, "email");
    // result: discriminant (ok = 0), then mapped-batch {targets, columns, outcomes}.
    let result = image.alloc(28, 4);
    image.put_u8(result, 0);
    image.put_u32(result + 4, target);
    image.put_u32(result + 8, 1);
    image.put_u32(result + 12, column);
    image.put_u32(result + 16, 1);
    image.put_u32(result + 20, outcome);
    image.put_u32(result + 24, 1);
    result
}

/// A record-mapper component whose `configure` accepts anything and whose `map` returns the
/// result at `result` in `image`, whatever the input.
fn record_mapper_wat(image: &Image, result: u32) -> String {
    let ok = image.bytes.len().next_multiple_of(8);
    let heap = (ok + 16).next_multiple_of(8);
    let pages = heap.div_ceil(65536) + 1;
    let mut data = String::with_capacity(image.bytes.len() * 3);
    for byte in &image.bytes {
        if byte.is_ascii_alphanumeric() {
            data.push(char::from(*byte));
        } else {
            write!(data, "\\{byte:02x}").unwrap();
        }
    }
    format!(
        r#"(component
  (core module $m
    (memory (export "memory") {pages})
    (global $heap (mut i32) (i32.const {heap}))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $at i32)
      (local.set $at (i32.and
        (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get 2))))
      (global.set $heap (i32.add (local.get $at) (local.get 3)))
      (if (i32.gt_u (global.get $heap) (i32.shl (memory.size) (i32.const 16)))
        (then (drop (memory.grow (i32.add (i32.const 1)
          (i32.shr_u (i32.sub (global.get $heap) (i32.shl (memory.size) (i32.const 16))) (i32.const 16)))))))
      (local.get $at))
    (func (export "configure") (param i32 i32) (result i32) (i32.const {ok}))
    (func (export "map") (param i32 i32 i32 i32 i32 i32 i32) (result i32) (i32.const {result}))
    (data (i32.const 0) "{data}"))
  (core instance $i (instantiate $m))
  (type $picklist' (record (field "value" s64) (field "label" (option string))))
  (export $picklist "picklist" (type $picklist'))
  (type $lookup' (record (field "table" string) (field "id" string)))
  (export $lookup "lookup" (type $lookup'))
  (type $value' (variant (case "null") (case "boolean" bool) (case "integer" s64)
    (case "decimal" f64) (case "text" string) (case "datetime" string)
    (case "picklist" $picklist) (case "guid" string) (case "lookup" $lookup)))
  (export $value "value" (type $value'))
  (type $operation' (enum "upsert" "update" "delete"))
  (export $operation "operation" (type $operation'))
  (type $row' (record (field "key" string) (field "op" $operation)
    (field "values" (list $value)) (field "modified-at" (option string))))
  (export $row "row" (type $row'))
  (type $batch' (record (field "table" string) (field "columns" (list string)) (field "rows" (list $row))))
  (export $batch "record-batch" (type $batch'))
  (type $phase' (enum "initial" "incremental" "replay"))
  (export $phase "phase" (type $phase'))
  (type $system' (enum "dynamics" "campaign"))
  (export $system "system" (type $system'))
  (type $target' (record (field "system" $system) (field "table" string) (field "key-field" string)))
  (export $target "target" (type $target'))
  (type $output' (record (field "target" u32) (field "key" string) (field "op" $operation)
    (field "fields" (list (tuple u32 $value)))))
  (export $output "output-record" (type $output'))
  (type $outcome' (variant (case "write" (list $output)) (case "skip" string) (case "reject" string)))
  (export $outcome "outcome" (type $outcome'))
  (type $mapped' (record (field "targets" (list $target)) (field "columns" (list string))
    (field "outcomes" (list $outcome))))
  (export $mapped "mapped-batch" (type $mapped'))
  (func (export "configure") (param "settings" string) (result (result (error string)))
    (canon lift (core func $i "configure") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (func (export "map") (param "phase" $phase) (param "batch" $batch) (result (result $mapped (error string)))
    (canon lift (core func $i "map") (memory (core memory $i "memory")) (realloc (core func $i "realloc")))))
"#
    )
}

fn one_row() -> RecordBatch {
    RecordBatch {
        table: "contact".into(),
        columns: vec!["emailaddress1".into()],
        rows: vec![Row {
            key: "c0".into(),
            op: Operation::Upsert,
            values: vec![Value::Text("a@example.com".into())],
            modified_at: None,
        }],
    }
}

#[test]
fn strings_shared_by_pointer_cost_the_host_no_more_than_the_output_budget() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let limits = Limits::default();
    // 16 records x 6 fields all pointing at one 1 MiB text: 96 MiB once copied, under
    // wasmtime's own default bound (128 MiB), six times the output budget.
    let mut image = Image::default();
    let value = "v".repeat(limits.max_string_bytes);
    let result = aliased_result(&mut image, 16, 6, &value);
    let component = wat::parse_str(record_mapper_wat(&image, result)).expect("the WAT is valid");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aliasing.wasm");
    std::fs::write(&path, component).unwrap();

    let host = PluginHost::new(None).unwrap();
    let plugin = host
        .load(&PluginRef::Path(path.clone()), World::RecordMapper)
        .expect("the hand-built component implements record-mapper");
    let mut mapper = plugin
        .record_mapper(&serde_json::json!({}), limits)
        .expect("configure accepts anything");
    let batch = one_row();

    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let outcome = mapper.map(Phase::Initial, &batch);
    let peak = PEAK.load(Ordering::Relaxed) - before;

    let Err(PluginError::InvalidOutput { problem, .. }) = &outcome else {
        panic!("the result must be refused as too large, got {outcome:?}")
    };
    assert!(
        problem.contains(&limits.max_output_bytes.to_string()),
        "the reason names the limit: {problem}"
    );
    assert!(
        peak < 2 * limits.max_output_bytes + (8 << 20),
        "the host held {} MiB of one call's result, above twice the {} MiB output budget",
        peak >> 20,
        limits.max_output_bytes >> 20
    );
    println!(
        "aliased strings: peak {} MiB allocated during the call",
        peak >> 20
    );

    // The same component, honest-sized (one record, one field), maps normally.
    let mut image = Image::default();
    let result = aliased_result(&mut image, 1, 1, "a@example.com");
    let component = wat::parse_str(record_mapper_wat(&image, result)).unwrap();
    let honest = dir.path().join("honest.wasm");
    std::fs::write(&honest, component).unwrap();
    let plugin = host
        .load(&PluginRef::Path(honest), World::RecordMapper)
        .unwrap();
    let outcomes = plugin
        .record_mapper(&serde_json::json!({}), limits)
        .unwrap()
        .map(Phase::Initial, &batch)
        .expect("an honest result maps");
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
}

#[test]
fn plugin_test_refuses_the_aliased_result_in_bounded_memory() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let limits = Limits::default();
    let mut image = Image::default();
    let value = "v".repeat(limits.max_string_bytes);
    let result = aliased_result(&mut image, 16, 6, &value);
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("aliasing.wasm");
    std::fs::write(
        &component,
        wat::parse_str(record_mapper_wat(&image, result)).unwrap(),
    )
    .unwrap();
    let settings = dir.path().join("settings.toml");
    std::fs::write(&settings, "").unwrap();
    let input = dir.path().join("input.json");
    std::fs::write(
        &input,
        r#"{"phase": "initial", "table": "contact", "columns": ["emailaddress1"], "rows": [
            {"key": "c0", "op": "upsert", "values": [{"type": "text", "value": "a@example.com"}],
             "modified_at": null}]}"#,
    )
    .unwrap();
    let rss_file = dir.path().join("rss");
    let output = std::process::Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss_file)
        .arg(env!("CARGO_BIN_EXE_conduit"))
        .args(["plugin", "test"])
        .arg(&component)
        .args(["--world", "record-mapper", "--settings"])
        .arg(&settings)
        .arg("--input")
        .arg(&input)
        .output()
        .expect("GNU time (/usr/bin/time) runs the conduit binary");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr:.3000}");
    assert!(
        stderr.contains("more than 16777216 bytes in total"),
        "{stderr:.3000}"
    );
    let kib: u64 = std::fs::read_to_string(&rss_file)
        .unwrap()
        .lines()
        .last()
        .and_then(|line| line.trim().parse().ok())
        .expect("GNU time wrote the peak RSS");
    println!("plugin test on aliased strings: peak RSS {} MiB", kib >> 10);
    assert!(kib < 512 << 10, "peak RSS {} MiB", kib >> 10);
}
