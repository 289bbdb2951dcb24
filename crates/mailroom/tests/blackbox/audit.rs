//! The audit log: who did what, filtered and paged, append-only, and never
//! holding a secret.

use std::time::Duration;

use mailroom_security::DataKey;
use serde_json::Value;
use sqlx::Connection;

use crate::{backend_test, support::*};

backend_test!(
    audit_log_is_filtered_paged_and_append_only,
    |db| async move {
        let app = TestApp::spawn(&db).await;
        let admin_prefix = app.admin_key[..11].to_string();
        let (reader, reader_id) = app.create_key("reader", "read", None).await;
        let r = app
            .client
            .delete(app.url(&format!("/api/v1/keys/{reader_id}")))
            .send()
            .await
            .expect("revoke");
        assert_eq!(r.status(), 200);
        let id = app
            .ingest(email(1, "a@example.com", "to delete", "body"))
            .await;
        app.wait_for_status(&id, "processed").await;
        assert_eq!(app.delete(&id).await, 204);
        assert_eq!(app.trigger(serde_json::json!({})).await.0, 200);
        for _ in 0..2 {
            let r = client_with_key(&reader)
                .get(app.url("/api/v1/messages"))
                .send()
                .await
                .expect("get");
            assert_eq!(r.status(), 401);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;

        let all = app.audit("limit=500").await;
        let ids: Vec<i64> = all.iter().map(|e| e["id"].as_i64().expect("id")).collect();
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
        let actions: Vec<&str> = all
            .iter()
            .map(|e| e["action"].as_str().unwrap_or_default())
            .collect();
        for expected in [
            "config.change",
            "key.create",
            "key.revoke",
            "message.delete",
            "process.trigger",
            "auth.failure",
        ] {
            assert!(
                actions.contains(&expected),
                "{expected} missing from {actions:?}"
            );
        }
        let delete = all
            .iter()
            .find(|e| e["action"] == "message.delete")
            .expect("delete audited");
        assert_eq!(delete["target"], id.as_str());
        assert_eq!(delete["actor"], admin_prefix.as_str());
        assert_eq!(delete["ip"], "127.0.0.1");
        let text = serde_json::to_string(&all).expect("json");
        assert!(
            !text.contains(&reader[11..]) && !text.contains(&app.admin_key[11..]),
            "a secret is in the audit log"
        );

        // Filters.
        let keys = app.audit("action=key.*").await;
        assert!(
            !keys.is_empty()
                && keys
                    .iter()
                    .all(|e| e["action"].as_str().unwrap_or_default().starts_with("key."))
        );
        let denied = app.audit("outcome=denied").await;
        assert_eq!(denied.len(), 2, "{denied:?}");
        assert!(denied
            .iter()
            .all(|e| e["actor"] == reader[..11] && e["details"]["reason"] == "revoked"));
        let by_admin = app.audit(&format!("actor={admin_prefix}")).await;
        assert!(by_admin.iter().all(|e| e["actor"] == admin_prefix.as_str()));
        assert!(by_admin.len() >= 4);
        assert!(app.audit("since=2999-01-01").await.is_empty());

        // Pages follow each other without overlap.
        let (_, first) = app.get_json("/api/v1/audit?limit=2").await;
        let cursor = first["next_cursor"]
            .as_str()
            .expect("a next page")
            .to_string();
        let (_, second) = app
            .get_json(&format!("/api/v1/audit?limit=2&cursor={cursor}"))
            .await;
        let page_ids = |p: &Value| {
            p["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|e| e["id"].as_i64().expect("id"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            [page_ids(&first), page_ids(&second)].concat(),
            ids[..4].to_vec()
        );

        for bad in [
            "limit=0",
            "outcome=maybe",
            "cursor=abc",
            "since=yesterday",
            "colour=red",
        ] {
            let (status, body) = app.get_json(&format!("/api/v1/audit?{bad}")).await;
            assert_eq!(status, 400, "{bad}: {body}");
        }
        let (reader2, _) = app.create_key("reader2", "read", None).await;
        let r = client_with_key(&reader2)
            .get(app.url("/api/v1/audit"))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 403);
        app.stop().await;

        // Append-only, enforced by the database itself.
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&db.url)
            .await
            .expect("connect");
        let update = sqlx::query("UPDATE audit_log SET actor = 'nobody'")
            .execute(&mut conn)
            .await;
        assert!(update.is_err(), "the audit log accepted an UPDATE");
        let delete = sqlx::query("DELETE FROM audit_log")
            .execute(&mut conn)
            .await;
        assert!(delete.is_err(), "the audit log accepted a DELETE");
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
            .fetch_one(&mut conn)
            .await
            .expect("count");
        assert!(count as usize >= all.len());
    }
);

backend_test!(
    configuration_changes_are_audited_without_secrets,
    |db| async move {
        let app = TestApp::spawn(&db).await;
        app.stop().await;
        let (_, material) = DataKey::generate();
        let app = TestApp::spawn_with(
            &db,
            &[
                ("queue.max_attempts", "7"),
                ("encryption.data_key", &material),
            ],
        )
        .await;
        let changes = app.audit("action=config.change").await;
        assert_eq!(
            changes.len(),
            2,
            "one per start whose settings changed: {changes:?}"
        );
        let changed = changes[0]["details"]["changed"]
            .as_array()
            .expect("changed")
            .clone();
        let find = |key: &str| changed.iter().find(|c| c["key"] == key).cloned();
        let attempts = find("queue.max_attempts").expect("max_attempts change");
        assert_eq!(attempts["from"], "5");
        assert_eq!(attempts["to"], "7");
        assert_eq!(
            find("encryption.data_key").expect("data key change")["to"],
            "[set]"
        );
        assert!(!serde_json::to_string(&changes)
            .expect("json")
            .contains(&material));
        app.stop().await;
        // The same settings again: nothing to record.
        let app = TestApp::spawn_with(
            &db,
            &[
                ("queue.max_attempts", "7"),
                ("encryption.data_key", &material),
            ],
        )
        .await;
        assert_eq!(app.audit("action=config.change").await.len(), 2);
        app.stop().await;
    }
);
