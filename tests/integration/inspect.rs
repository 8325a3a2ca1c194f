//! `inspect`: numbers equal SQL counts, pagination, and a few round trips over a slow link.

use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::common::{TestDb, binary};

/// Inserts a user created `age_days` ago with backups `backup_ages_days` old of `size` bytes.
pub async fn seed_user(pool: &PgPool, age_days: i64, backup_ages_days: &[i64], size: usize) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO users (id, token_hash, created_at) VALUES ($1, sha256($2::text::bytea), now() - make_interval(days => $3::int))")
        .bind(id)
        .bind(id.to_string())
        .bind(age_days)
        .execute(pool)
        .await
        .unwrap();
    for (n, age) in backup_ages_days.iter().enumerate() {
        let document = format!("{{\"n\": {n}, \"pad\": \"{}\"}}", "x".repeat(size.saturating_sub(20)));
        sqlx::query(
            "INSERT INTO backups (id, user_id, created_at, size_bytes, sha256, chunk_ids) \
             VALUES ($1, $2, now() - make_interval(days => $3::int) - make_interval(secs => $4::int), $5, sha256(convert_to($6, 'UTF8')), \
                     test_chunks($2, $6))",
        )
        .bind(Uuid::new_v4())
        .bind(id)
        .bind(*age)
        .bind(n as i32)
        .bind(document.len() as i32)
        .bind(&document)
        .execute(pool)
        .await
        .unwrap();
    }
    id
}

async fn inspect(url: &str, args: &[&str]) -> Value {
    let mut all = vec!["inspect"];
    all.extend_from_slice(args);
    all.push("--json");
    let outcome = binary::run(&all, &[("DATABASE_URL", url)]).await;
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    serde_json::from_str(&outcome.stdout).unwrap()
}

#[tokio::test]
async fn inspect_users_and_user_match_sql() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let big = seed_user(&pool, 30, &[1, 2, 3], 5000).await;
    let small = seed_user(&pool, 10, &[0], 100).await;
    let idle = seed_user(&pool, 5, &[], 0).await;

    let by_size = inspect(&db.url, &["users", "--sort", "size"]).await;
    let ids: Vec<&str> = by_size["users"].as_array().unwrap().iter().map(|u| u["user_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [big.to_string(), small.to_string(), idle.to_string()]);
    assert_eq!(by_size["next_cursor"], Value::Null);
    for user in by_size["users"].as_array().unwrap() {
        let id: Uuid = user["user_id"].as_str().unwrap().parse().unwrap();
        let (count, bytes): (i64, i64) =
            sqlx::query_as("SELECT count(*), coalesce(sum(size_bytes), 0)::bigint FROM backups WHERE user_id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!((user["backup_count"].as_i64().unwrap(), user["total_bytes"].as_i64().unwrap()), (count, bytes));
    }
    assert_eq!(by_size["users"][2]["last_backup_at"], Value::Null);

    let page = inspect(&db.url, &["users", "--sort", "created", "--limit", "2"]).await;
    assert_eq!(page["users"].as_array().unwrap().len(), 2);
    let next = page["next_cursor"].as_str().unwrap().to_owned();
    let rest = inspect(&db.url, &["users", "--sort", "created", "--limit", "2", "--cursor", &next]).await;
    assert_eq!(rest["users"].as_array().unwrap().len(), 1);
    assert_eq!(rest["users"][0]["user_id"], big.to_string(), "the oldest account comes last");

    let one = inspect(&db.url, &["user", &big.to_string()]).await;
    assert_eq!(one["user"]["backup_count"], 3);
    let backups = one["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 3);
    assert!(
        backups.iter().all(|b| b["size_bytes"].as_i64().unwrap() > 4000 && b["sha256"].as_str().unwrap().len() == 64)
    );
}

#[tokio::test]
async fn inspect_backups_filters_by_user_and_age_and_pages() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let alice = seed_user(&pool, 30, &[0, 1, 5, 20], 100).await;
    seed_user(&pool, 30, &[0, 2], 100).await;

    let recent = inspect(&db.url, &["backups", "--since", "3d"]).await;
    assert_eq!(recent["backups"].as_array().unwrap().len(), 4);
    let hers = inspect(&db.url, &["backups", "--user", &alice.to_string()]).await;
    assert!(hers["backups"].as_array().unwrap().iter().all(|b| b["user_id"] == alice.to_string()));
    assert_eq!(hers["backups"].as_array().unwrap().len(), 4);

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut args = vec!["backups", "--limit", "2"];
        if let Some(cursor) = &cursor {
            args.extend(["--cursor", cursor.as_str()]);
        }
        let page = inspect(&db.url, &args).await;
        seen.extend(page["backups"].as_array().unwrap().iter().map(|b| b["backup_id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let unique: std::collections::HashSet<&String> = seen.iter().collect();
    assert_eq!((seen.len(), unique.len()), (6, 6));
}

#[tokio::test]
async fn inspect_stats_match_sql() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    seed_user(&pool, 30, &[0, 0, 1, 20], 1000).await;
    let heavy = seed_user(&pool, 30, &[3], 50_000).await;
    seed_user(&pool, 1, &[], 0).await;
    let stats = inspect(&db.url, &["stats"]).await;
    let (users, backups, bytes): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM backups), (SELECT sum(size_bytes)::bigint FROM backups)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (stats["users"].as_i64(), stats["backups"].as_i64(), stats["total_bytes"].as_i64()),
        (Some(users), Some(backups), Some(bytes))
    );
    assert!(stats["database_bytes"].as_i64().unwrap() > bytes);
    let backups_table = stats["tables"].as_array().unwrap().iter().find(|t| t["name"] == "backups").unwrap();
    assert_eq!(backups_table["rows"].as_i64(), Some(backups));
    assert_eq!(stats["largest_users"][0]["user_id"], heavy.to_string());
    let days = stats["backups_per_day"].as_array().unwrap();
    assert_eq!(days.len(), 14);
    assert_eq!(days[13]["backups"], 2, "today");
    assert_eq!(days[12]["backups"], 1, "yesterday");
    assert_eq!(days.iter().map(|d| d["backups"].as_i64().unwrap()).sum::<i64>(), 4, "the 20-day-old one is outside");

    let [force, no_colour] = binary::AS_ON_A_TERMINAL;
    let table = binary::run(&["inspect", "stats"], &[("DATABASE_URL", &db.url), force, no_colour]).await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.contains("Backups per day") && table.stdout.contains('█'), "{}", table.stdout);
    assert!(table.stdout.contains("KiB"), "sizes for people: {}", table.stdout);
    assert_eq!(stats["last_database_backup"], serde_json::Value::Null);
    assert!(table.stdout.contains("Last database backup: none recorded"), "{}", table.stdout);

    // A backup 30 hours ago is shown with its age, and warned about.
    sqlx::query(
        "INSERT INTO database_backups (finished_at, location, bytes, seconds) \
         VALUES (now() - interval '30 hours', 's3://b/db/x.sql.zst.age', 1234, 1.5)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let stats = inspect(&db.url, &["stats"]).await;
    assert_eq!(stats["last_database_backup"]["location"], "s3://b/db/x.sql.zst.age");
    assert!((30 * 3600..31 * 3600).contains(&stats["last_database_backup"]["age_seconds"].as_i64().unwrap()));
    let table = binary::run(&["inspect", "stats"], &[("DATABASE_URL", &db.url), force, no_colour]).await;
    assert!(
        table.stdout.contains("30 hours ago") && table.stdout.contains("warning: older than 26 hours"),
        "{}",
        table.stdout
    );
}

/// A proxy to `upstream` that counts the statements' round trips: each ReadyForQuery the server
/// sends (one when the connection is ready, one for each simple query or each Sync of an
/// extended one), on any connection, except the answer to a Sync sent alone (sqlx's check of a
/// connection given back to its pool, which nothing waits for and the process's exit may cut
/// short). Unlike a timing over a slow link, a busy machine cannot change the count.
pub(crate) async fn round_trip_counter(upstream: String) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// The SSLRequest code: the server answers it with one unframed byte.
    const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 4, 210, 22, 47];
    /// A Sync message on its own.
    const LONE_SYNC: [u8; 5] = [b'S', 0, 0, 0, 4];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let ready = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&ready);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            let probed = Arc::new(AtomicBool::new(false));
            let lone_syncs = Arc::new(AtomicUsize::new(0));
            let (probed_by_client, ready) = (Arc::clone(&probed), Arc::clone(&counted));
            let lone_syncs_sent = Arc::clone(&lone_syncs);
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 64 * 1024];
                let mut first = true;
                while let Ok(n @ 1..) = client_read.read(&mut buffer).await {
                    // Known before the server can answer: it answers only what it was sent.
                    if std::mem::take(&mut first) && buffer[..n].starts_with(&SSL_REQUEST) {
                        probed_by_client.store(true, Ordering::SeqCst);
                    }
                    if buffer[..n] == LONE_SYNC {
                        lone_syncs_sent.fetch_add(1, Ordering::SeqCst);
                    }
                    if server_write.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = server_write.shutdown().await;
            });
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 64 * 1024];
                let mut pending: Vec<u8> = Vec::new();
                let mut skip_answer = true;
                while let Ok(n @ 1..) = server_read.read(&mut buffer).await {
                    pending.extend_from_slice(&buffer[..n]);
                    if std::mem::take(&mut skip_answer) && probed.load(Ordering::SeqCst) {
                        pending.remove(0); // 'N': no TLS here
                    }
                    // Whole messages: a type byte, then a length that counts itself.
                    while pending.len() >= 5 {
                        let length = u32::from_be_bytes(pending[1..5].try_into().unwrap()) as usize;
                        if pending.len() < 1 + length {
                            break;
                        }
                        let answers_lone_sync = || {
                            lone_syncs.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
                        };
                        if pending[0] == b'Z' && !answers_lone_sync() {
                            ready.fetch_add(1, Ordering::SeqCst);
                        }
                        pending.drain(..1 + length);
                    }
                    if client_write.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = client_write.shutdown().await;
            });
        }
    });
    (port, ready)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_users_over_a_slow_link_costs_a_few_round_trips_not_one_per_user() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    sqlx::query(
        "INSERT INTO users (id, token_hash, created_at) \
         SELECT gen_random_uuid(), sha256(g::text::bytea), now() - make_interval(secs => g) FROM generate_series(1, 1000) g",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO backups (id, user_id, size_bytes, sha256, chunk_ids) SELECT gen_random_uuid(), id, 2, sha256('{}'), test_chunks(id, '{}') FROM users")
        .execute(&pool)
        .await
        .unwrap();

    let (host_port, database) = db.url.rsplit_once('/').unwrap();
    let upstream = host_port.rsplit_once('@').unwrap().1.to_owned();
    let (port, turns) = round_trip_counter(upstream).await;
    let counted_url = format!("{}@127.0.0.1:{port}/{database}", host_port.rsplit_once('@').unwrap().0);
    let turns_now = || turns.load(std::sync::atomic::Ordering::SeqCst);

    let before = turns_now();
    let baseline = binary::run(&["migrate", "status", "--json"], &[("DATABASE_URL", &counted_url)]).await;
    assert_eq!(baseline.code, 0, "{}", baseline.stderr);
    let connect_and_one_query = turns_now() - before;

    let before = turns_now();
    let users = inspect(&counted_url, &["users", "--limit", "1000"]).await;
    let listing = turns_now() - before;
    assert_eq!(users["users"].as_array().unwrap().len(), 1000);
    eprintln!("round trips: migrate status {connect_and_one_query}, inspect users (1000) {listing}");
    // One statement more than the baseline's at most, and far from 1000 of them.
    assert!(
        listing <= connect_and_one_query + 2,
        "inspect users took {listing} round trips against {connect_and_one_query} for connect + one query"
    );
}

/// `inspect` for people, at `columns` wide (as `fly ssh console`'s terminal is).
async fn inspect_text(url: &str, args: &[&str], columns: &str) -> String {
    let mut all = vec!["inspect"];
    all.extend_from_slice(args);
    let [force, no_colour] = binary::AS_ON_A_TERMINAL;
    let outcome = binary::run(&all, &[("DATABASE_URL", url), ("COLUMNS", columns), force, no_colour]).await;
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    outcome.stdout
}

#[tokio::test]
async fn tables_say_how_much_there_is_and_fit_80_columns() {
    let db = TestDb::migrated().await;
    let url = &db.url;
    assert_eq!(inspect_text(url, &["users"], "80").await.lines().last(), Some("No users."));
    assert_eq!(inspect_text(url, &["backups"], "80").await.lines().last(), Some("No backups."));

    let pool = db.pool().await;
    let mut users = Vec::new();
    for n in 0..5 {
        users.push(seed_user(&pool, 10 + n, &[0, 1, 2], 2000).await);
    }
    let page = inspect_text(url, &["users", "--limit", "2"], "80").await;
    assert_eq!(page.lines().last(), Some("Showing 2 of 5 users; next page: --cursor 2"), "{page}");
    let last = inspect_text(url, &["users", "--cursor", "4"], "80").await;
    assert_eq!(last.lines().last(), Some("Showing 5-5 of 5 users"), "{last}");
    let past = inspect_text(url, &["users", "--cursor", "9"], "80").await;
    assert_eq!(past.lines().last(), Some("No users on this page (5 in all)."), "{past}");

    let backups = inspect_text(url, &["backups", "--limit", "4"], "80").await;
    let footer = backups.lines().last().unwrap();
    let json = inspect(url, &["backups", "--limit", "4"]).await;
    assert_eq!(json["total"], 15);
    let cursor = json["next_cursor"].as_str().unwrap();
    assert_eq!(footer, format!("Showing 4 of 15 backups; next page: --cursor {cursor}"));

    // Each table at 80 columns: no line wider, every id whole on one line, and what was
    // hidden to get there named.
    for (args, ids) in [
        (vec!["users"], users.clone()),
        (vec!["backups", "--limit", "4"], vec![]),
        (vec!["user", &users[0].to_string()], vec![users[0]]),
    ] {
        let text = inspect_text(url, &args, "80").await;
        // (The footer's cursor is one token to copy, as long as it is.)
        for line in text.lines().filter(|line| !line.contains("--cursor")) {
            assert!(line.chars().count() <= 80, "{args:?}: {} columns: {line}\n{text}", line.chars().count());
        }
        for id in ids {
            assert!(text.contains(&id.to_string()), "{args:?}: {id} is not whole on one line:\n{text}");
        }
        let shown: Vec<&str> =
            json["backups"].as_array().unwrap().iter().map(|b| b["backup_id"].as_str().unwrap()).collect();
        if args[0] == "backups" {
            assert!(shown.iter().all(|id| text.contains(id)), "{text}");
            assert!(text.contains("(hidden at 80 columns: SHA-256"), "{text}");
        }
    }
    // Piped, for a script, nothing is hidden nor cut, whatever COLUMNS says: the whole SHA-256.
    let outcome = binary::run(&["inspect", "backups"], &[("DATABASE_URL", url), ("COLUMNS", "80")]).await;
    let sha256 = json["backups"][0]["sha256"].as_str().unwrap();
    assert!(outcome.stdout.contains(sha256) && !outcome.stdout.contains("hidden"), "{}", outcome.stdout);
}

#[tokio::test]
async fn piped_tables_are_for_scripts_rows_only_exact_values_and_footers_on_stderr() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let user = seed_user(&pool, 3, &[1], 5000).await;
    let outcome = binary::run(&["inspect", "backups"], &[("DATABASE_URL", &db.url)]).await;
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let json = inspect(&db.url, &["backups"]).await;
    let backup = &json["backups"][0];
    // Backup, user, created, size, SHA-256: each exact, nothing cut, no header, no border.
    let expected = [
        backup["backup_id"].as_str().unwrap().to_owned(),
        user.to_string(),
        backup["created_at"].as_str().unwrap().to_owned(),
        backup["size_bytes"].to_string(),
        backup["sha256"].as_str().unwrap().to_owned(),
    ];
    assert_eq!(outcome.stdout, format!("{}\n", expected.join("\t")));
    assert!(outcome.stderr.contains("Showing 1 of 1 backup"), "the footer goes to stderr: {}", outcome.stderr);
    let quiet = binary::run(&["inspect", "backups", "--quiet"], &[("DATABASE_URL", &db.url)]).await;
    assert_eq!((quiet.stdout.as_str(), quiet.stderr.as_str()), (outcome.stdout.as_str(), ""));

    // The users' view: integer bytes, an RFC 3339 time.
    let users = binary::run(&["inspect", "users"], &[("DATABASE_URL", &db.url)]).await;
    let fields: Vec<&str> = users.stdout.trim_end().split('\t').collect();
    assert_eq!(fields.len(), 6, "{:?}", users.stdout);
    assert_eq!(fields[0], user.to_string());
    assert!(time::OffsetDateTime::parse(fields[1], &time::format_description::well_known::Rfc3339).is_ok());
    assert!(fields[4].parse::<i64>().is_ok_and(|bytes| bytes > 4000), "{fields:?}");
}
