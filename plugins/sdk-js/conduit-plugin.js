// The JavaScript helper of the Conduit plugin SDK (componentize-js), for the
// conduit:plugin@1.1.0 contract: typed values, output builders, strict settings, `log`, and
// errors that keep their message. `conduit plugin new --lang js` writes it next to the
// plugin's source (componentize-js resolves imports inside the source's folder only).
//
//   import { Batch, Output, errorsAsResults, hostSettings, ownSettings } from "./conduit-plugin.js";
//   export const { configure, map } = errorsAsResults({ configure: setUp, map: mapBatch });
//
// WIT shapes in componentize-js: a variant is `{tag, val}`, an enum a string (`"upsert"`), a
// record field camelCase (`keyField`), an `s64` a BigInt, an `option<T>` the value or
// `undefined`.

import { log as witLog } from "conduit:plugin/log@1.1.0";

/** The SDK version this helper belongs to (the contract's version). */
export const SDK_VERSION = "1.1.0";

// ---------------------------------------------------------------------------------------------
// Errors

/**
 * Wraps each function of `exports` so that whatever it throws becomes the `err` string of the
 * WIT result: `<ErrorName>: <message>` for an Error. componentize-js turns a thrown *string*
 * into the `err`, but a thrown `Error` cannot be encoded as the `string` error and the runtime
 * aborts (the host would see only "wasm `unreachable` instruction executed").
 */
export function errorsAsResults(exports) {
  const wrapped = {};
  for (const [name, fn] of Object.entries(exports)) {
    wrapped[name] = (...args) => {
      try {
        return fn(...args);
      } catch (thrown) {
        throw describe(thrown);
      }
    };
  }
  return wrapped;
}

/** The text of a thrown value: `Name: message` for an Error, the value as text otherwise. */
function describe(thrown) {
  if (thrown instanceof Error) {
    return `${thrown.name}: ${thrown.message}`;
  }
  if (typeof thrown === "string") {
    return thrown;
  }
  try {
    return JSON.stringify(thrown) ?? String(thrown);
  } catch {
    return String(thrown);
  }
}

// ---------------------------------------------------------------------------------------------
// Logging

/** Writes to the host log, tagged with the plugin's name (rate-limited by the host). */
export const log = {
  debug: (message) => witLog("debug", String(message)),
  info: (message) => witLog("info", String(message)),
  warn: (message) => witLog("warn", String(message)),
  error: (message) => witLog("error", String(message)),
};

// ---------------------------------------------------------------------------------------------
// Settings

const TYPES = {
  string: (v) => typeof v === "string",
  boolean: (v) => typeof v === "boolean",
  number: (v) => typeof v === "number",
  integer: (v) => Number.isInteger(v),
  array: (v) => Array.isArray(v),
  object: (v) => v !== null && typeof v === "object" && !Array.isArray(v),
  any: () => true,
};

/** The object `configure` received, parsed; an error names what is wrong. */
function parseGiven(json) {
  let given;
  try {
    given = JSON.parse(json);
  } catch (error) {
    throw new Error(`invalid settings: not JSON (${error.message})`);
  }
  if (!TYPES.object(given)) throw new Error("invalid settings: expected an object");
  return given;
}

/**
 * The plugin's own `settings` table (`{}` when absent), checked strictly against `spec`:
 * `{name: "string"}` is a required string, `{name: {type: "boolean", default: false}}` an
 * optional one (types: string, boolean, number, integer, array, object, any). A key `spec`
 * does not name is an error naming it; returns the settings with defaults filled in.
 */
export function ownSettings(json, spec = {}) {
  const own = parseGiven(json).settings ?? {};
  if (!TYPES.object(own)) throw new Error("invalid setting `settings`: expected a table");
  const known = Object.keys(spec);
  const unknown = Object.keys(own).filter((key) => !known.includes(key));
  if (unknown.length > 0) {
    const expected = known.length === 0
      ? "the plugin takes no settings"
      : `expected ${known.map((k) => `\`${k}\``).join(", ")}`;
    const also = unknown.length > 1 ? ` (also ${unknown.slice(1).map((k) => `\`${k}\``).join(", ")})` : "";
    throw new Error(`invalid setting \`settings.${unknown[0]}\`: unknown setting${also}; ${expected}`);
  }
  const result = {};
  for (const [key, rule] of Object.entries(spec)) {
    const { type, default: fallback } = typeof rule === "string" ? { type: rule } : rule;
    const check = TYPES[type];
    if (!check) throw new Error(`ownSettings: unknown type \`${type}\` for \`${key}\``);
    if (!(key in own)) {
      if (typeof rule === "string" || !("default" in rule)) {
        throw new Error(`invalid setting \`settings\`: missing field \`${key}\``);
      }
      result[key] = fallback;
    } else if (!check(own[key])) {
      throw new Error(`invalid setting \`settings.${key}\`: expected ${type === "integer" || type === "array" || type === "object" ? "an" : "a"} ${type}`);
    } else {
      result[key] = own[key];
    }
  }
  return result;
}

/**
 * The host's keys of what `configure` received (e.g. `destination`, `key`, `fields` for an
 * Ingress mapping), without the plugin's own `settings`. Read the keys you need and ignore
 * the rest: a newer host may add keys.
 */
export function hostSettings(json) {
  const { settings: _own, ...host } = parseGiven(json);
  return host;
}

// ---------------------------------------------------------------------------------------------
// Values

/** Constructors of the WIT `value` variant. */
export const Value = {
  null: () => ({ tag: "null" }),
  boolean: (b) => ({ tag: "boolean", val: Boolean(b) }),
  integer: (n) => ({ tag: "integer", val: BigInt(n) }),
  decimal: (x) => ({ tag: "decimal", val: Number(x) }),
  text: (s) => ({ tag: "text", val: String(s) }),
  datetime: (s) => ({ tag: "datetime", val: String(s) }),
  picklist: (value, label) => ({ tag: "picklist", val: { value: BigInt(value), label: label ?? undefined } }),
  guid: (s) => ({ tag: "guid", val: String(s) }),
  lookup: (table, id) => ({ tag: "lookup", val: { table: String(table), id: String(id) } }),
};

/** Whether `v` already is a WIT value (`{tag, ...}`). */
function isValue(v) {
  return v !== null && typeof v === "object" && typeof v.tag === "string";
}

/**
 * A WIT value from a plain one: null/undefined -> null, boolean, BigInt -> integer, number ->
 * decimal, string -> text; a WIT value is kept as it is.
 */
export function value(v) {
  if (v === null || v === undefined) return Value.null();
  if (isValue(v)) return v;
  switch (typeof v) {
    case "boolean": return Value.boolean(v);
    case "bigint": return Value.integer(v);
    case "number": return Value.decimal(v);
    case "string": return Value.text(v);
    default: throw new TypeError(`cannot make a WIT value of ${typeof v}`);
  }
}

/** The text of a text, datetime or guid value; else null. */
export function asText(v) {
  if (!v) return null;
  if (v.tag === "text" || v.tag === "datetime" || v.tag === "guid") return v.val;
  return null;
}

/** A picklist's label, when the source sent one; else null. */
export const picklistLabel = (v) => (v && v.tag === "picklist" ? v.val.label ?? null : null);

/** The boolean of a boolean value; else null. */
export const asBool = (v) => (v && v.tag === "boolean" ? v.val : null);
/** The integer (BigInt) of an integer or picklist value; else null. */
export const asInteger = (v) => (v && v.tag === "integer" ? v.val : v && v.tag === "picklist" ? v.val.value : null);
/** The number of a decimal or integer value; else null. */
export const asDecimal = (v) => (v && v.tag === "decimal" ? v.val : v && v.tag === "integer" ? Number(v.val) : null);
/** The id of a lookup value; else null. */
export const lookupId = (v) => (v && v.tag === "lookup" ? v.val.id : null);
/** Whether the value is null (or missing). */
export const isNull = (v) => !v || v.tag === "null";

/** A record batch with columns found by name. */
export class Batch {
  /** Wraps the `record-batch` `map` received. */
  constructor(batch) {
    this.table = batch.table;
    this.columns = batch.columns;
    this.rows = batch.rows;
    this.index = new Map(batch.columns.map((name, i) => [name, i]));
  }

  /** The value of column `name` in `row`: null when the batch does not carry the column. */
  get(row, name) {
    const i = this.index.get(name);
    return i === undefined || i >= row.values.length ? Value.null() : row.values[i];
  }
}

// ---------------------------------------------------------------------------------------------
// Outputs

/**
 * Builds a `mapped-batch`: targets and destination columns are interned (each listed once,
 * referred to by index), and one outcome is pushed per input, in input order.
 */
export class Output {
  constructor() {
    this.targets = [];
    this.columns = [];
    this.outcomes = [];
    this.targetIndex = new Map();
    this.columnIndex = new Map();
  }

  /** The index of target (`"campaign"` or `"dynamics"`, table, key field), added once. */
  target(system, table, keyField) {
    const id = `${system}\u0000${table}\u0000${keyField}`;
    let i = this.targetIndex.get(id);
    if (i === undefined) {
      i = this.targets.length;
      this.targets.push({ system, table, keyField });
      this.targetIndex.set(id, i);
    }
    return i;
  }

  /** The index of destination column `name`, added once. */
  column(name) {
    let i = this.columnIndex.get(name);
    if (i === undefined) {
      i = this.columns.length;
      this.columns.push(name);
      this.columnIndex.set(name, i);
    }
    return i;
  }

  /** An output record: `fields` maps destination column names to values (plain or WIT). */
  record(op, target, key, fields = {}) {
    return {
      target,
      key: String(key),
      op,
      fields: Object.entries(fields).map(([name, v]) => [this.column(name), value(v)]),
    };
  }

  /** An upsert of `key` on `target`. */
  upsert(target, key, fields) { return this.record("upsert", target, key, fields); }
  /** An update of an existing `key` on `target`. */
  update(target, key, fields) { return this.record("update", target, key, fields); }
  /** A delete of `key` on `target`. */
  delete(target, key) { return this.record("delete", target, key); }

  /** Outcome: write these records (none: nothing to propagate). */
  write(...records) { this.outcomes.push({ tag: "write", val: records }); }
  /** Outcome: deliberately not propagated, with the reason. */
  skip(reason) { this.outcomes.push({ tag: "skip", val: String(reason) }); }
  /** Outcome: this input cannot be mapped (dead-lettered with the reason). */
  reject(reason) { this.outcomes.push({ tag: "reject", val: String(reason) }); }

  /** The `mapped-batch` to return. */
  finish() {
    return { targets: this.targets, columns: this.columns, outcomes: this.outcomes };
  }
}
