// The JavaScript helper of the Conduit plugin SDK (componentize-js). Import it by relative
// path from a plugin's source file; componentize-js bundles it.
//
// componentize-js turns a thrown *string* into the `err` of a WIT result, but a thrown `Error`
// cannot be encoded as the `string` error and the runtime aborts: the host sees only
// "wasm `unreachable` instruction executed" and the message is lost. `errorsAsResults` wraps
// the plugin's exports so that anything they throw becomes the `err` string
// `<ErrorName>: <message>`, which reaches `conduit plugin test` and the dead letters.
//
//   import { errorsAsResults } from "./conduit-plugin.js";
//   export const { configure, map } = errorsAsResults({ configure, map });

/** Wraps each function of `exports` so that whatever it throws becomes a string error. */
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
