// Example plugin in JavaScript (componentize-js): the same contact mapping as
// ../contact-mapper (Rust) and ../contact-mapper-py, against the record-mapper world of
// wit/conduit-plugin.wit. Values are WIT variants ({tag, val}); a thrown string becomes the
// `err` of a result.

let destination = null;

export function configure(settings) {
  const parsed = JSON.parse(settings);
  for (const key of Object.keys(parsed)) {
    if (key !== "destination") throw `invalid setting \`${key}\`: unknown field`;
  }
  if (typeof parsed.destination !== "string") throw "invalid settings: missing field `destination`";
  destination = parsed.destination;
}

const text = (value) =>
  value && (value.tag === "text" || value.tag === "datetime" || value.tag === "guid") ? value.val : null;
const textValue = (string) => (string === null ? { tag: "null" } : { tag: "text", val: string });

export function map(_phase, batch) {
  if (destination === null) throw "map called before configure";
  const column = (name) => batch.columns.indexOf(name);
  const [first, last, email] = ["firstname", "lastname", "emailaddress1"].map(column);
  const outcomes = batch.rows.map((row) => {
    const at = (index) => (index < 0 ? null : text(row.values[index]));
    const address = at(email);
    if (address === null) return { tag: "skip", val: "no emailaddress1" };
    if (!address.includes("@")) {
      return { tag: "reject", val: `emailaddress1 \`${address}\` is not an e-mail address` };
    }
    return {
      tag: "write",
      val: [{
        target: 0,
        key: row.key,
        op: "upsert",
        fields: [[0, textValue(at(first))], [1, textValue(at(last))], [2, textValue(address.toLowerCase())]],
      }],
    };
  });
  return {
    targets: [{ system: "campaign", table: destination, keyField: "externalId" }],
    columns: ["firstName", "lastName", "email"],
    outcomes,
  };
}
