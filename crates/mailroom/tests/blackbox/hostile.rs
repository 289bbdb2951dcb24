//! Bad input gets a clear 4xx with a JSON error, or is stored and processed
//! with what could be parsed; never a 500, a hang or a crash.

use serde_json::Value;

use crate::{backend_test, support::*};

async fn expect_error(response: reqwest::Response, status: u16, code: &str) {
    assert_eq!(response.status().as_u16(), status);
    let body: Value = response.json().await.expect("JSON error body");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
}

backend_test!(rejections_are_json_4xx, |db| async move {
    let app = TestApp::spawn(&db).await;
    expect_error(app.post_message("").await, 400, "empty_body").await;
    expect_error(
        app.post_message(vec![0x89u8, b'P', b'N', b'G', 0, 0, 0xff, 0xfe, 13, 10])
            .await,
        422,
        "not_an_email",
    )
    .await;
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    expect_error(app.post_message(garbage).await, 422, "not_an_email").await;
    expect_error(
        app.post_message(vec![b'a'; 30 * 1024 * 1024]).await,
        413,
        "payload_too_large",
    )
    .await;
    let json = app
        .client
        .post(app.url("/api/v1/messages"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("post");
    expect_error(json, 415, "unsupported_media_type").await;
    let missing = app
        .client
        .get(app.url("/api/v1/nope"))
        .send()
        .await
        .expect("get");
    expect_error(missing, 404, "not_found").await;
    let wrong_method = app
        .client
        .put(app.url("/api/v1/messages"))
        .send()
        .await
        .expect("put");
    expect_error(wrong_method, 405, "method_not_allowed").await;
    let bad_id = app
        .client
        .get(app.url("/api/v1/messages/not-an-id"))
        .send()
        .await
        .expect("get");
    expect_error(bad_id, 400, "invalid_parameter").await;
    let bad_trigger = app
        .client
        .post(app.url("/process/trigger"))
        .body("{not json")
        .send()
        .await
        .expect("post");
    expect_error(bad_trigger, 400, "invalid_json").await;
    let (_, list) = app.get_json("/api/v1/messages").await;
    assert_eq!(
        list["items"].as_array().map(Vec::len),
        Some(0),
        "nothing rejected was stored"
    );
    app.stop().await;
});

backend_test!(broken_but_recognisable_mail_is_processed, |db| async move {
    let app = TestApp::spawn(&db).await;
    let truncated = "From: a@example.com\r\nSubject: cut\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\nContent-Type: text/plain\r\n\r\nthe message stops here with no clos";
    let mut invalid_utf8 = b"From: \xff\xfe <x@example.com>\r\nSubject: caf\xe9 \xc3\x28 bad\r\nTo: \x80@example.org\r\n\r\nbody \xff\r\n".to_vec();
    invalid_utf8.extend_from_slice(b"more");
    let mut many_parts = b"From: a@example.com\r\nSubject: parts\r\nContent-Type: multipart/mixed; boundary=q\r\n\r\n".to_vec();
    for i in 0..10_000 {
        many_parts.extend_from_slice(format!("--q\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=f{i}.bin\r\n\r\nx\r\n").as_bytes());
    }
    many_parts.extend_from_slice(b"--q--\r\n");
    let mut deep = b"From: a@example.com\r\nSubject: deep\r\n".to_vec();
    for i in 0..200 {
        deep.extend_from_slice(
            format!("Content-Type: multipart/mixed; boundary=d{i}\r\n\r\n--d{i}\r\n").as_bytes(),
        );
    }

    let nul_bytes =
        b"From: nul\0@example.com\r\nSubject: a\0b\r\n\r\nbody with \0 NUL bytes \0\r\n".to_vec();
    let mut ids = Vec::new();
    for raw in [
        truncated.as_bytes().to_vec(),
        invalid_utf8,
        many_parts,
        deep,
        nul_bytes,
    ] {
        ids.push(app.ingest(raw).await);
    }
    for id in &ids {
        let m = app.wait_for_status(id, "processed").await;
        assert!(m["parsed"].is_object());
    }
    let truncated_view = app.message(&ids[0]).await;
    assert!(truncated_view["parsed"]["text_body"]
        .as_str()
        .unwrap_or_default()
        .contains("stops here"));
    let nul = app.message(&ids[4]).await;
    assert!(
        nul["parsed"]["text_body"]
            .as_str()
            .unwrap_or_default()
            .contains("NUL bytes"),
        "{nul}"
    );
    let many = app.message(&ids[2]).await;
    assert_eq!(
        many["parsed"]["attachments"].as_array().map(Vec::len),
        Some(1000)
    );
    assert!(!many["parsed"]["warnings"]
        .as_array()
        .expect("warnings")
        .is_empty());
    app.stop().await;
});
