"""Drives the Dataverse simulator with Microsoft's Dataverse SDK for Python
(PowerPlatform-Dataverse-Client, pinned in requirements.txt), as a new user of that SDK would.

Steps: discover the tables and the contact columns (EntityDefinitions, Attributes, and the
picklist metadata the SDK reads to turn a choice label into its value), read every contact page by page through the
SDK, read the contacts change-tracked (Prefer: odata.track-changes, all pages through
@odata.nextLink with odata.maxpagesize) up to the @odata.deltaLink, create, update and delete
contacts through the SDK, then follow the delta link and check that the delta holds exactly the
created and updated rows plus one $deletedEntity entry per deleted row, and that the next delta
is empty.

Tokens come from azure-identity's ClientSecretCredential, as the SDK's documentation shows, with
the simulator as the authority. The SDK has no change tracking of its own, so those reads are
plain Web API calls (requests, a token from the same credential and the headers the SDK sends),
as the Dataverse docs describe them.

Usage: python fidelity.py <simulator organization URL, https://...>
Environment: CONDUIT_SIM_D365_CLIENT_ID / CONDUIT_SIM_D365_CLIENT_SECRET (simulator defaults
otherwise); REQUESTS_CA_BUNDLE names the certificate to trust for the simulator's HTTPS;
FIDELITY_SEEDED_CONTACTS is the number of contacts the simulator was seeded with.
Prints one JSON summary on stdout; exits non-zero with the failed check on stderr.
"""

import json
import os
import sys
from urllib.parse import urljoin

import requests
from azure.identity import ClientSecretCredential
from PowerPlatform.Dataverse.client import DataverseClient

PAGE_SIZE = 40
CREATED = 3
UPDATED = 2
DELETED = 2


class Failed(Exception):
    """A check against the simulator did not hold."""


def check(condition, message):
    if not condition:
        raise Failed(message)


def tracked_read(session, api, credential, scope, entity_set, select, delta_link=None):
    """Reads `entity_set` change-tracked: every page up to the delta link, or the delta at `delta_link`."""
    headers = {
        "Authorization": f"Bearer {credential.get_token(scope).token}",
        "Accept": "application/json",
        "OData-MaxVersion": "4.0",
        "OData-Version": "4.0",
        "Prefer": f"odata.track-changes,odata.maxpagesize={PAGE_SIZE}",
    }
    url = delta_link or f"{api}/{entity_set}?$select={','.join(select)}"
    rows, pages, contexts, applied = [], 0, [], set()
    while True:
        response = session.get(url, headers=headers, timeout=30)
        check(response.status_code == 200, f"GET {url} answered {response.status_code}: {response.text[:300]}")
        applied.update(p.strip() for p in response.headers.get("Preference-Applied", "").split(",") if p.strip())
        body = response.json()
        pages += 1
        contexts.append(body.get("@odata.context", ""))
        check(isinstance(body.get("value"), list), f"page {pages} of {url} has no value array")
        rows.extend(body["value"])
        if "@odata.nextLink" in body:
            check("@odata.deltaLink" not in body, "a page carries both a next link and a delta link")
            url = body["@odata.nextLink"]
            continue
        check("@odata.deltaLink" in body, f"the last page of {url} has no @odata.deltaLink")
        return {"rows": rows, "pages": pages, "contexts": contexts, "applied": sorted(applied), "delta_link": body["@odata.deltaLink"]}


def main():
    if len(sys.argv) != 2 or not sys.argv[1].startswith("https://"):
        print("usage: python fidelity.py <simulator organization URL, https://...>", file=sys.stderr)
        return 2
    base = sys.argv[1].rstrip("/") + "/"
    seeded = int(os.environ.get("FIDELITY_SEEDED_CONTACTS", "0"))
    # The simulator is its own Microsoft identity platform: azure-identity finds its token
    # endpoint through the OpenID Connect discovery document under the authority.
    credential = ClientSecretCredential(
        "fidelity-python",
        os.environ.get("CONDUIT_SIM_D365_CLIENT_ID", "conduit-sim-client"),
        os.environ.get("CONDUIT_SIM_D365_CLIENT_SECRET", "conduit-sim-secret"),
        authority=base,
        disable_instance_discovery=True,
    )
    summary = {}
    with DataverseClient(base, credential) as client, requests.Session() as session:
        # Discovery, with the SDK's own metadata calls.
        tables = client.tables.list(select=["LogicalName", "EntitySetName", "PrimaryIdAttribute"])
        by_name = {table["LogicalName"]: table for table in tables}
        check("contact" in by_name, f"tables.list() has no contact table: {sorted(by_name)}")
        info = client.tables.get("contact")
        check(info is not None, "tables.get('contact') found nothing")
        entity_set = info["entity_set_name"]
        primary_id = info["primary_id_attribute"]
        check(bool(info["metadata_id"]), "tables.get('contact') has no MetadataId")
        columns = client.tables.list_columns("contact", select=["LogicalName", "AttributeType"])
        types = {column["LogicalName"]: column.get("AttributeType") for column in columns}
        strings = client.tables.list_columns("contact", select=["LogicalName"], filter="AttributeType eq 'String'")
        string_names = sorted(column["LogicalName"] for column in strings)
        check(all(types.get(name) == "String" for name in string_names), f"the String filter let through {string_names}")
        summary["discovery"] = {
            "tables": sorted(by_name),
            "entity_set": entity_set,
            "primary_id": primary_id,
            "primary_name": info["primary_name_attribute"],
            "attribute_types": types,
            "string_attributes": string_names,
        }

        # A paged read through the SDK (Prefer: odata.maxpagesize, @odata.nextLink).
        pages = list(client.records.list_pages("contact", select=["firstname", "lastname"], page_size=PAGE_SIZE))
        sizes = [len(page) for page in pages]
        summary["sdk_paged_read"] = {"pages": sizes, "rows": sum(sizes)}

        # The change-tracked read, all pages, up to the delta link.
        scope = f"{base.rstrip('/')}/.default"
        select = ["firstname", "lastname", "emailaddress1"]
        api = f"{base}api/data/v9.2"
        initial = tracked_read(session, api, credential, scope, entity_set, select)
        initial_ids = [row[primary_id] for row in initial["rows"]]
        check(len(set(initial_ids)) == len(initial_ids), "the change-tracked read returned a row twice")
        check("$deltatoken=" in initial["delta_link"], f"the delta link has no $deltatoken: {initial['delta_link']}")
        summary["tracked_read"] = {
            "rows": len(initial_ids),
            "pages": initial["pages"],
            "preference_applied": initial["applied"],
            "delta_link_has_token": "$deltatoken=" in initial["delta_link"],
        }

        # Changes through the SDK: create, update, delete.
        created = [
            client.records.create("contact", {"firstname": "Py", "lastname": f"Created{n}", "emailaddress1": f"py.created{n}@example.com"})
            for n in range(CREATED)
        ]
        updated = initial_ids[:UPDATED]
        for n, record_id in enumerate(updated):
            client.records.update("contact", record_id, {"lastname": f"Updated{n}"})
        deleted = initial_ids[UPDATED : UPDATED + DELETED]
        for record_id in deleted:
            client.records.delete("contact", record_id)
        # The SDK turns a choice label into its value from the table's picklist metadata.
        client.records.update("contact", created[0], {"gendercode": "Female"})
        fetched = client.records.get("contact", created[0], select=["firstname", "lastname", "gendercode"])
        check(fetched["lastname"] == "Created0", f"records.get of a created contact: {fetched.to_dict()}")
        summary["label_to_choice"] = fetched["gendercode"]
        summary["changes"] = {"created": created, "updated": updated, "deleted": deleted}

        # The delta: changed rows as entities, deleted rows as $deletedEntity entries.
        delta = tracked_read(session, "", credential, scope, entity_set, select, delta_link=initial["delta_link"])
        changed, removed, reasons, deleted_contexts = [], [], set(), set()
        last_names = {}
        for row in delta["rows"]:
            if str(row.get("@odata.context", "")).endswith("/$deletedEntity"):
                removed.append(row.get("id"))
                reasons.add(row.get("reason"))
                deleted_contexts.add(row["@odata.context"].split("#", 1)[-1])
            else:
                changed.append(row[primary_id])
                last_names[row[primary_id]] = row.get("lastname")
        summary["delta"] = {
            "changed": changed,
            "removed": removed,
            "reasons": sorted(str(reason) for reason in reasons),
            "deleted_contexts": sorted(deleted_contexts),
            "last_names": last_names,
            "context_is_delta": all(context.endswith("/$delta") for context in delta["contexts"]),
        }
        check(sorted(changed) == sorted(created + updated), f"the delta's changed rows {sorted(changed)} are not the created and updated ones {sorted(created + updated)}")
        check(sorted(removed) == sorted(deleted), f"the delta's removed rows {sorted(removed)} are not the deleted ones {sorted(deleted)}")
        check(reasons == {"deleted"}, f"the removed entries' reasons are {reasons}")

        # Nothing changed since: the next delta is empty.
        after = tracked_read(session, "", credential, scope, entity_set, select, delta_link=delta["delta_link"])
        summary["next_delta_rows"] = len(after["rows"])
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failed as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        sys.exit(1)
