// Drives the Campaign Standard simulator with Adobe's own client, @adobe/aio-lib-campaign-standard,
// to check that the simulator speaks the real wire format. Usage:
//   node fidelity.mjs <sim-origin> <org> <client-id> <client-secret>
// The library targets https://mc.adobe.io; we redirect it by rewriting the server URL of the
// OpenAPI spec object it loads (the same cached module object), never by bending the simulator.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const [origin, org, clientId, clientSecret] = process.argv.slice(2)
if (!origin || !org || !clientId || !clientSecret) {
  console.error('usage: node fidelity.mjs <sim-origin> <org> <client-id> <client-secret>')
  process.exit(2)
}

const spec = require('@adobe/aio-lib-campaign-standard/spec/api.json')
spec.servers[0].url = `${origin}/{ORGANIZATION}/campaign`
const campaign = require('@adobe/aio-lib-campaign-standard')

function check (condition, what) {
  if (!condition) {
    throw new Error(`fidelity check failed: ${what}`)
  }
}

async function token () {
  const form = new URLSearchParams({
    grant_type: 'client_credentials',
    client_id: clientId,
    client_secret: clientSecret,
    scope: 'openid,AdobeID,campaign_sdk'
  })
  const response = await fetch(`${origin}/ims/token/v3`, { method: 'POST', body: form })
  check(response.ok, `IMS token status ${response.status}`)
  const body = await response.json()
  check(body.token_type === 'bearer' && typeof body.expires_in === 'number', 'IMS token shape')
  return body.access_token
}

async function main () {
  const client = await campaign.init(org, clientId, await token())
  const crmId = `fidelity-${Date.now()}`

  const created = await client.createProfile({ email: 'ada@example.com', firstName: 'Ada', externalId: crmId })
  const pkey = created.body.PKey
  check(typeof pkey === 'string' && pkey.length > 0, 'createProfile returns a PKey')
  check(typeof created.body.href === 'string', 'createProfile returns an href')

  const byKey = await client.getAllProfiles({ filters: ['byExternalId'], hasCustomFilter: true, externalId_parameter: crmId })
  check(Array.isArray(byKey.body.content) && byKey.body.content.length === 1, 'byExternalId finds exactly one profile')
  check(byKey.body.content[0].PKey === pkey, 'byExternalId returns the created PKey')

  const updated = await client.updateProfile(pkey, { lastName: 'Lovelace' })
  check(updated.body.PKey === pkey && typeof updated.body.href === 'string', 'updateProfile returns {PKey, href}')
  const fetched = await client.getProfile(pkey)
  check(fetched.body.lastName === 'Lovelace' && fetched.body.firstName === 'Ada', 'getProfile shows the update')

  for (let year = 2020; year < 2023; year++) {
    await client.createCustomResource('cusVehicle', { cusCrmId: `${crmId}-${year}`, cusName: 'Car', cusYear: year, cusProfileCrmId: crmId })
  }
  const page = await client.getAllProfileAndServicesExt('cusVehicle', { lineCount: 2 })
  check(page.body.content.length === 2, 'listing cusVehicle with lineCount 2 returns 2 rows')
  check(typeof page.body.next?.href === 'string', 'a full page carries next.href')
  const next = await fetch(page.body.next.href, {
    headers: { Authorization: `Bearer ${client.accessToken}`, 'X-Api-Key': clientId, 'Cache-Control': 'no-cache' }
  })
  check(next.ok, `following next.href answers ${next.status}`)
  check((await next.json()).content.length >= 1, 'the next page has the remaining rows')

  const metadata = await client.getMetadataForResource('profile')
  check(metadata.body.content.firstName.type === 'string', 'resourceType metadata describes firstName')

  let refused = false
  try {
    await client.updateProfile(pkey, { noSuchField: 1 })
  } catch (error) {
    refused = String(error.message).includes('RST-360011')
  }
  check(refused, 'an unknown field is refused with an RST error')

  console.log(JSON.stringify({ ok: true, pkeyLength: pkey.length }))
}

main().catch(error => {
  console.error(error.stack || String(error))
  process.exit(1)
})
