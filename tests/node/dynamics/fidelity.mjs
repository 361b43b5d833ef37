// Drives the Dataverse simulator with the third-party `dynamics-web-api` client, to check that
// the simulator speaks the real wire format: token, WhoAmI, create, retrieve (with formatted
// values), retrieveMultiple with paging, change tracking, upsert, conditional update, delete,
// count, metadata and $batch (change set with a Content-ID reference, and continue-on-error).
//
// Usage: node fidelity.mjs <simulator base URL, e.g. http://127.0.0.1:5555/>
// Credentials: CONDUIT_SIM_D365_CLIENT_ID / CONDUIT_SIM_D365_CLIENT_SECRET (simulator defaults otherwise).
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { DynamicsWebApi } from "dynamics-web-api";

const base = process.argv[2];
if (!base || !/^https?:\/\//.test(base)) {
  console.error("usage: node fidelity.mjs <simulator base URL>");
  process.exit(2);
}
const clientId = process.env.CONDUIT_SIM_D365_CLIENT_ID ?? "conduit-sim-client";
const clientSecret = process.env.CONDUIT_SIM_D365_CLIENT_SECRET ?? "conduit-sim-secret";

async function acquireToken() {
  const response = await fetch(new URL("fidelity-tenant/oauth2/v2.0/token", base), {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "client_credentials",
      client_id: clientId,
      client_secret: clientSecret,
      scope: new URL(".default", base).toString(),
    }),
  });
  assert.equal(response.status, 200, "token endpoint answers 200");
  const body = await response.json();
  assert.equal(body.token_type, "Bearer");
  return body.access_token;
}

const api = new DynamicsWebApi({ serverUrl: base, onTokenRefresh: acquireToken, dataApi: { version: "9.2" } });

async function step(name, body) {
  try {
    await body();
    console.log(`ok ${name}`);
  } catch (error) {
    console.error(`FAILED ${name}:`, error);
    process.exit(1);
  }
}

let created;
const seeded = Number(process.env.FIDELITY_SEEDED_CONTACTS ?? "250");

await step("WhoAmI", async () => {
  const whoAmI = await api.callFunction("WhoAmI");
  assert.match(whoAmI.UserId, /^[0-9a-f-]{36}$/);
});

await step("create", async () => {
  created = await api.create({ collection: "contacts", data: { firstname: "Fidelity", lastname: "Client", gendercode: 2 } });
  assert.match(String(created), /^[0-9a-f-]{36}$/, `create returns the new id, got ${created}`);
});

await step("retrieve with formatted values", async () => {
  const contact = await api.retrieve({
    collection: "contacts",
    key: created,
    select: ["firstname", "lastname", "fullname", "gendercode"],
    includeAnnotations: "OData.Community.Display.V1.FormattedValue",
  });
  assert.equal(contact.fullname, "Fidelity Client");
  assert.equal(contact.gendercode, 2);
  assert.equal(contact["gendercode@OData.Community.Display.V1.FormattedValue"], "Female");
  assert.equal(contact.contactid, created);
});

await step("retrieveMultiple paging", async () => {
  const request = { collection: "contacts", select: ["lastname"], maxPageSize: 100 };
  const first = await api.retrieveMultiple(request);
  assert.equal(first.value.length, 100);
  assert.ok(first.oDataNextLink, "a next link on the first page");
  const second = await api.retrieveMultiple(request, first.oDataNextLink);
  assert.equal(second.value.length, 100);
  const firstIds = new Set(first.value.map((row) => row.contactid));
  assert.ok(second.value.every((row) => !firstIds.has(row.contactid)), "pages do not overlap");
  const all = await api.retrieveAll(request);
  assert.equal(all.value.length, seeded + 1);
});

await step("change tracking", async () => {
  const all = await api.retrieveAll({ collection: "contacts", select: ["lastname"], maxPageSize: 100, trackChanges: true });
  assert.equal(all.value.length, seeded + 1);
  assert.ok(all.oDataDeltaLink, "a delta link at the end");
  assert.match(all.oDataDeltaLink, /\$deltatoken=/);
});

await step("upsert creates then updates", async () => {
  const id = randomUUID();
  await api.upsert({ collection: "contacts", key: id, data: { lastname: "Upserted" } });
  await api.upsert({ collection: "contacts", key: id, data: { firstname: "Now" } });
  const contact = await api.retrieve({ collection: "contacts", key: id, select: ["fullname"] });
  assert.equal(contact.fullname, "Now Upserted");
});

await step("update-only of a missing row is 404", async () => {
  await assert.rejects(
    api.update({ collection: "contacts", key: randomUUID(), data: { lastname: "Nobody" } }),
    (error) => error.status === 404 && /Does Not Exist/.test(error.message),
  );
});

await step("upsert by alternate key", async () => {
  await api.upsert({ collection: "contacts", key: "emailaddress1='alt.key@example.com'", data: { lastname: "AltKey" } });
  const found = await api.retrieveMultiple({ collection: "contacts", select: ["lastname"], filter: "emailaddress1 eq 'alt.key@example.com'" });
  assert.equal(found.value.length, 1);
  assert.equal(found.value[0].lastname, "AltKey");
});

await step("delete", async () => {
  await api.deleteRecord({ collection: "contacts", key: created });
  await assert.rejects(api.retrieve({ collection: "contacts", key: created }), (error) => error.status === 404);
});

await step("count", async () => {
  const count = await api.count({ collection: "new_vehicles" });
  assert.ok(count > 0, `vehicles counted, got ${count}`);
});

await step("metadata", async () => {
  const entity = await api.retrieveEntity({ key: "LogicalName='contact'", select: ["LogicalName", "EntitySetName", "PrimaryIdAttribute"] });
  assert.equal(entity.EntitySetName, "contacts");
  assert.equal(entity.PrimaryIdAttribute, "contactid");
});

await step("batch with a change set and a Content-ID reference", async () => {
  api.startBatch();
  api.create({ collection: "contacts", data: { firstname: "Batch", lastname: "Parent" }, contentId: "1" });
  api.create({
    collection: "adobe_emailsends",
    data: { subject: "Campaign Name: C; Delivery Name: D", "regardingobjectid_contact@odata.bind": "$1" },
  });
  api.retrieveMultiple({ collection: "new_vehicles", select: ["new_name"], maxPageSize: 2 });
  const responses = await api.executeBatch();
  assert.equal(responses.length, 3);
  assert.match(String(responses[0]), /^[0-9a-f-]{36}$/, `first create returns an id, got ${JSON.stringify(responses[0])}`);
  assert.match(String(responses[1]), /^[0-9a-f-]{36}$/);
  assert.equal(responses[2].value.length, 2);
  const activity = await api.retrieve({ collection: "adobe_emailsends", key: String(responses[1]), select: ["_regardingobjectid_value"] });
  assert.equal(activity._regardingobjectid_value, String(responses[0]));
});

await step("batch with continue-on-error reports each failure", async () => {
  api.startBatch();
  api.upsert({ collection: "contacts", key: randomUUID(), data: { lastname: "Fine" }, inChangeSet: false });
  api.upsert({ collection: "contacts", key: randomUUID(), data: { gendercode: 99 }, inChangeSet: false });
  api.upsert({ collection: "contacts", key: randomUUID(), data: { lastname: "AlsoFine" }, inChangeSet: false });
  const responses = await api.executeBatch({ continueOnError: true });
  assert.equal(responses.length, 3, JSON.stringify(responses));
  const failures = responses.filter((response) => response instanceof Error || response?.status >= 400 || response?.error);
  assert.equal(failures.length, 1, JSON.stringify(responses));
});

console.log("fidelity: all steps passed");
