use std::{fs, process::Output};

use crate::{backend_test, support::*};

fn run(db: &TestDb, args: &[&str]) -> Output {
    binary()
        .args(args)
        .env("MAILROOM_DATABASE_URL", &db.url)
        .env("LOG_LEVEL", "warn")
        .current_dir(db.dir())
        .output()
        .expect("run mailroom")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

backend_test!(
    import_eml_trees_mbox_and_maildir_idempotently,
    |db| async move {
        let root = db.dir().join("mail");
        fs::create_dir_all(root.join("nested/deeper")).expect("dirs");
        fs::write(root.join("one.eml"), email(1, "a@example.com", "one", "1")).expect("write");
        fs::write(
            root.join("nested/deeper/two.eml"),
            email(2, "b@example.com", "two", "2"),
        )
        .expect("write");
        fs::write(root.join("nested/junk.bin"), [0u8, 159, 146, 150, 0xff]).expect("write");
        fs::write(root.join("nested/empty.eml"), "").expect("write");
        let mbox = format!(
        "From a@example.com Mon Nov 23 10:00:00 2026\n{}\nFrom b@example.com Mon Nov 23 10:00:01 2026\n{}\nFrom c@example.com Mon Nov 23 10:00:02 2026\n{}\n",
        email(3, "m1@example.com", "mbox one", ">From the start").replace("\r\n", "\n"),
        email(4, "m2@example.com", "mbox two", "2").replace("\r\n", "\n"),
        email(5, "m3@example.com", "mbox three", "3").replace("\r\n", "\n"),
    );
        fs::write(root.join("archive.mbox"), mbox).expect("write");
        let maildir = db.dir().join("Maildir");
        for sub in ["cur", "new", "tmp", ".Sent/cur", ".Sent/new", ".Sent/tmp"] {
            fs::create_dir_all(maildir.join(sub)).expect("maildir");
        }
        fs::write(
            maildir.join("cur/1700000000.1.host:2,S"),
            email(6, "md@example.com", "maildir cur", "x"),
        )
        .expect("write");
        fs::write(
            maildir.join("new/1700000001.2.host"),
            email(7, "md@example.com", "maildir new", "y"),
        )
        .expect("write");
        fs::write(
            maildir.join(".Sent/cur/1700000002.3.host:2,S"),
            email(8, "md@example.com", "sent", "z"),
        )
        .expect("write");
        fs::write(maildir.join("tmp/partial"), "From: half-written").expect("write");
        fs::write(maildir.join("dovecot-uidlist"), "3 V1 N4").expect("write");

        let paths = [
            root.to_string_lossy().to_string(),
            maildir.to_string_lossy().to_string(),
        ];
        let first = run(&db, &["import", "--quiet", &paths[0], &paths[1]]);
        let out = text(&first);
        assert!(first.status.success(), "{out}");
        assert!(
            out.contains("imported 8, duplicates 0, rejected 2"),
            "{out}"
        );
        assert!(
            out.contains("not an RFC 5322 message") && out.contains("junk.bin"),
            "{out}"
        );
        assert!(out.contains("empty") && out.contains("empty.eml"), "{out}");

        let second = run(&db, &["import", "--quiet", &paths[0], &paths[1]]);
        assert!(
            text(&second).contains("imported 0, duplicates 8, rejected 2"),
            "{}",
            text(&second)
        );

        // The server picks the imported jobs up and processes them.
        let app = TestApp::spawn(&db).await;
        let (_, list) = app.get_json("/api/v1/messages?limit=100").await;
        let items = list["items"].as_array().expect("items").clone();
        assert_eq!(items.len(), 8);
        for item in &items {
            let m = app
                .wait_for_status(item["id"].as_str().expect("id"), "processed")
                .await;
            assert_eq!(m["source"], "import");
        }
        let (_, mbox_one) = app.get_json("/api/v1/messages?q=from%20the%20start").await;
        assert_eq!(
            mbox_one["items"].as_array().map(Vec::len),
            Some(1),
            "mbox >From quoting undone"
        );
        app.stop().await;
    }
);

#[test]
fn config_validate_reports_every_problem_with_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mailroom.toml");
    fs::write(
        &path,
        "bind = \"not-an-address\"\nworkers = 0\ntypo_key = 1\n[queue]\nmax_attempts = \"many\"\n",
    )
    .expect("write");
    let out = binary()
        .args(["config", "validate", "--config"])
        .arg(&path)
        .env("DATABASE_URL", "mysql://nope")
        .env_remove("MAILROOM_DATABASE_URL")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for key in [
        "bind:",
        "workers:",
        "typo_key:",
        "queue.max_attempts:",
        "database_url:",
    ] {
        assert!(stdout.contains(key), "{key} missing:\n{stdout}");
    }

    fs::write(
        &path,
        "bind = \"127.0.0.1:9999\"\n[queue]\nmax_attempts = 3\n",
    )
    .expect("write");
    let ok = binary()
        .args(["config", "validate", "--config"])
        .arg(&path)
        .env_remove("DATABASE_URL")
        .env_remove("MAILROOM_DATABASE_URL")
        .output()
        .expect("run");
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
}

#[test]
fn migrate_creates_the_sqlite_file_and_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = binary()
        .args(["migrate", "--database-url", "sqlite://nested/dir/m.db"])
        .current_dir(dir.path())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("nested/dir/m.db").is_file());
}
