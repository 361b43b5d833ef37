//! The Campaign simulator's wire format, checked with a plain HTTP client: IMS, gateway errors,
//! record shapes, paging and counting, metadata, RST error bodies, the journal and `/_sim` control.

use conduit_sim::campaign::{CampaignSim, CampaignSimOptions, CampaignSimServer};
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Wire {
    sim: CampaignSim,
    server: CampaignSimServer,
    http: reqwest::Client,
    token: String,
}

async fn wire() -> Wire {
    let sim = CampaignSim::new(CampaignSimOptions::default());
    let server = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let http = reqwest::Client::new();
    let token: Value = http
        .post(server.ims_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", sim.client_id()),
            ("client_secret", sim.client_secret()),
            ("scope", "openid,AdobeID,campaign_sdk"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(token["token_type"], "bearer");
    assert_eq!(token["expires_in"], 86_399);
    Wire {
        token: token["access_token"].as_str().unwrap().to_owned(),
        sim,
        server,
        http,
    }
}

impl Wire {
    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.server.api_base())
    }

    fn call(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, url)
            .bearer_auth(&self.token)
            .header("X-Api-Key", self.sim.client_id())
            .header("Cache-Control", "no-cache")
            .header("Content-Type", "application/json;charset=utf-8")
    }

    async fn json(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.call(method, url);
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn ims_refuses_a_wrong_secret_with_an_oauth_error() {
    let w = wire().await;
    let response = w
        .http
        .post(w.server.ims_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", w.sim.client_id()),
            ("client_secret", "nope"),
            ("scope", "openid"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
}

#[tokio::test]
async fn the_gateway_answers_403_without_api_key_and_401013_for_a_bad_token() {
    let w = wire().await;
    let url = w.url("profileAndServicesExt/profile");
    let response = w.http.get(&url).bearer_auth(&w.token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = w
        .http
        .get(&url)
        .bearer_auth("forged")
        .header("X-Api-Key", w.sim.client_id())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error_code": "401013", "message": "Oauth token is not valid"})
    );
}

#[tokio::test]
async fn post_returns_the_record_with_opaque_pkey_and_patch_returns_pkey_and_href() {
    let w = wire().await;
    let (status, created) = w
        .json(
            reqwest::Method::POST,
            &w.url("profileAndServicesExt/profile"),
            Some(json!({"email": "ada@example.com", "externalId": "c-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let pkey = created["PKey"].as_str().unwrap().to_owned();
    assert!(pkey.starts_with('@') && pkey.len() > 20);
    let href = created["href"].as_str().unwrap().to_owned();
    assert!(href.ends_with(&pkey));
    assert_eq!(created["blackListEmail"], false);
    assert_eq!(created["gender"], "unknown");
    assert!(created["created"].as_str().unwrap().ends_with('Z'));

    let (status, patched) = w
        .json(
            reqwest::Method::PATCH,
            &href,
            Some(json!({"firstName": "Ada"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patched, json!({"PKey": pkey, "href": href}));

    let (status, found) = w
        .json(
            reqwest::Method::GET,
            &w.url("profileAndServicesExt/profile/byExternalId?externalId_parameter=c-1"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found["content"][0]["firstName"], "Ada");

    let (status, _) = w.json(reqwest::Method::DELETE, &href, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, gone) = w.json(reqwest::Method::GET, &href, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(gone["code"], 404);
    assert!(gone["message"].as_str().unwrap().starts_with("RST-360011"));
}

#[tokio::test]
async fn lists_default_to_25_rows_with_next_and_count_links() {
    let w = wire().await;
    for index in 0..30 {
        w.sim
            .insert("profile", &json!({"externalId": format!("c-{index}")}))
            .unwrap();
    }
    let (_, page) = w
        .json(
            reqwest::Method::GET,
            &w.url("profileAndServicesExt/profile"),
            None,
        )
        .await;
    assert_eq!(page["content"].as_array().unwrap().len(), 25);
    assert_eq!(page["serverSidePagination"], true);
    let next = page["next"]["href"].as_str().unwrap();
    assert!(next.contains("_lineStart="));
    let (_, rest) = w.json(reqwest::Method::GET, next, None).await;
    assert_eq!(rest["content"].as_array().unwrap().len(), 5);
    assert!(rest.get("next").is_none());
    let (_, count) = w
        .json(
            reqwest::Method::GET,
            page["count"]["href"].as_str().unwrap(),
            None,
        )
        .await;
    assert_eq!(count, json!({"count": 30}));
}

#[tokio::test]
async fn refusals_carry_rst_bodies_with_the_status() {
    let w = wire().await;
    let cases = [
        (
            "profileAndServicesExt/profile",
            json!({"firstName": "x".repeat(31)}),
            StatusCode::BAD_REQUEST,
            "firstName",
        ),
        (
            "profileAndServicesExt/profile",
            json!({"noSuchField": 1}),
            StatusCode::BAD_REQUEST,
            "noSuchField",
        ),
        (
            "profileAndServicesExt/profile",
            json!({"gender": "robot"}),
            StatusCode::BAD_REQUEST,
            "gender",
        ),
        (
            "profileAndServicesExt/cusUnknown",
            json!({}),
            StatusCode::NOT_FOUND,
            "cusUnknown",
        ),
        (
            "profileAndServices/cusVehicle",
            json!({}),
            StatusCode::NOT_FOUND,
            "cusVehicle",
        ),
    ];
    for (path, body, status, named) in cases {
        let (got, error) = w
            .json(reqwest::Method::POST, &w.url(path), Some(body))
            .await;
        assert_eq!(got, status, "{path}: {error}");
        assert_eq!(error["code"], status.as_u16());
        let message = error["message"].as_str().unwrap();
        assert!(
            message.starts_with("RST-360011") && message.contains(named),
            "{message}"
        );
    }
}

#[tokio::test]
async fn resource_type_metadata_describes_custom_resources() {
    let w = wire().await;
    let (status, metadata) = w
        .json(
            reqwest::Method::GET,
            &w.url("profileAndServicesExt/resourceType/cusVehicle"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(metadata["content"]["cusYear"]["type"], "long");
    assert_eq!(metadata["content"]["cusCrmId"]["apiName"], "cusCrmId");
    assert_eq!(metadata["name"], "cusVehicle");
}

#[tokio::test]
async fn the_journal_answers_204_when_empty_and_pages_with_link_next() {
    let w = wire().await;
    let journal = w.server.journal_url();
    let response = w.call(reqwest::Method::GET, &journal).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let control = format!("{}/_sim/events", w.server.origin());
    let events: Vec<Value> = (0..3)
        .map(|index| json!({"id": format!("e-{index}"), "kind": "send"}))
        .collect();
    let appended: Value = w
        .http
        .post(&control)
        .json(&events)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(appended["appended"], 3);
    let response = w
        .call(reqwest::Method::GET, &format!("{journal}?limit=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let link = response.headers()["link"].to_str().unwrap().to_owned();
    let page: Value = response.json().await.unwrap();
    assert_eq!(page["_page"]["count"], 2);
    let last = page["_page"]["last"].as_str().unwrap();
    assert_eq!(page["events"][1]["position"], last);
    assert!(
        link.contains(&format!("since={last}")) && link.ends_with("rel=\"next\""),
        "{link}"
    );
}

#[tokio::test]
async fn the_control_api_sets_opt_outs_and_drops_exports() {
    let w = wire().await;
    w.sim
        .insert("profile", &json!({"externalId": "c-1"}))
        .unwrap();
    let origin = w.server.origin();
    let response = w
        .http
        .post(format!("{origin}/_sim/opt-outs"))
        .json(&json!({"crmId": "c-1", "attribute": "blackListEmail", "value": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let refused = w
        .http
        .post(format!("{origin}/_sim/opt-outs"))
        .json(&json!({"crmId": "c-1", "attribute": "email", "value": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let export: Value = w
        .http
        .post(format!("{origin}/_sim/exports"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let path = export["path"].as_str().unwrap();
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.starts_with("crmId,attribute,value,changedAt\nc-1,blackListEmail,true,"),
        "{text}"
    );
    let response = w
        .http
        .post(format!("{origin}/_sim/schema/profile/phone"))
        .json(&json!({"removed": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(w.sim.find("profile", "c-1").unwrap().get("phone").is_none());
}

#[tokio::test]
async fn fault_rates_and_queued_faults_are_set_over_the_control_api() {
    let w = wire().await;
    let origin = w.server.origin();
    let list = w.url("profileAndServicesExt/profile");
    let response = w
        .http
        .post(format!("{origin}/_sim/faults/next"))
        .json(&json!([{"kind": "rate-limited", "retry_after_secs": 7}]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let limited = w.call(reqwest::Method::GET, &list).send().await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()["retry-after"], "7");

    w.http
        .put(format!("{origin}/_sim/faults/rates"))
        .json(&json!({"error_rate": 1.0}))
        .send()
        .await
        .unwrap();
    let (status, body) = w.json(reqwest::Method::GET, &list, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body["message"],
        "Oops. Something went wrong. Check your URI and try again."
    );
    w.http
        .delete(format!("{origin}/_sim/faults"))
        .send()
        .await
        .unwrap();
    let (status, _) = w.json(reqwest::Method::GET, &list, None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn bad_fault_settings_are_refused_by_name_and_stats_count_what_was_served() {
    let w = wire().await;
    let origin = w.server.origin();
    let list = w.url("profileAndServicesExt/profile");
    let response = w
        .http
        .put(format!("{origin}/_sim/faults/rates"))
        .json(&json!({"error_rate": 2.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("error_rate"));
    let response = w
        .http
        .post(format!("{origin}/_sim/faults/next"))
        .json(&json!([{"kind": "server-error", "status": 200}]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let response = w
        .http
        .post(format!("{origin}/_sim/faults/next"))
        .json(&json!([{"kind": "pass"}, {"kind": "malformed"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (status, _) = w.json(reqwest::Method::GET, &list, None).await;
    assert_eq!(status, StatusCode::OK);
    let garbled = w.call(reqwest::Method::GET, &list).send().await.unwrap();
    assert_eq!(garbled.status(), StatusCode::OK);
    assert!(serde_json::from_slice::<Value>(&garbled.bytes().await.unwrap()).is_err());
    let stats: Value = w
        .http
        .get(format!("{origin}/_sim/faults/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["malformed"], 1);
    assert_eq!(stats["requests"], 2);
}
