//! Latency of `GET /profiles` (find) against a running, seeded server; prints a table.
//! Driven by scripts/bench-profiles.sh:
//!   cargo run --release --example bench_find -- BASE_URL STORE_ID API_KEY TAXONOMY_ID [ROUNDS]

use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: bench_find BASE_URL STORE_ID API_KEY TAXONOMY_ID [ROUNDS]");
        std::process::exit(2);
    }
    let (base, store, key, tax) = (&args[1], &args[2], &args[3], &args[4]);
    let rounds: usize = args.get(5).and_then(|r| r.parse().ok()).unwrap_or(200);
    let http = reqwest::Client::new();
    let url = |q: &str| format!("{base}/v1/stores/{store}/profiles?{q}");
    let tq =
        |fields: Value| format!("taxonomy_query={}", enc(&json!([{"taxonomy_id": tax, "query": fields}]).to_string()));

    let cases: Vec<(&str, String)> = vec![
        ("list, default sort", "limit=50".into()),
        ("query: email substring (rare)", "query=user4242.".into()),
        ("query: domain substring (~1%)", "query=%40seed42.".into()),
        ("query: text value (tag)", "query=wholesale".into()),
        ("taxonomy: tier = gold", tq(json!([{"key": "tier", "type": "text", "value": ["gold"]}]))),
        (
            "taxonomy: tags all [vip, b2b]",
            tq(json!([{"key": "tags", "type": "text", "operation": "all", "value": ["vip", "b2b"]}])),
        ),
        (
            "taxonomy: orders between 10..20",
            tq(json!([{"key": "orders", "type": "number", "operation": "between", "value": [10, 20]}])),
        ),
        ("taxonomy: vip = true", tq(json!([{"key": "vip", "type": "boolean", "value": true}]))),
        (
            "taxonomy: within 10 km of Paris",
            tq(json!([{"key": "home", "type": "geo_location", "center": {"lat": 48.85, "lon": 2.35}, "radius": 10}])),
        ),
        (
            "query + taxonomy + sort=email",
            format!(
                "query=seed1&sort_field=email&{}",
                tq(json!([{"key": "tier", "type": "text", "value": ["silver"]}]))
            ),
        ),
    ];

    println!("| case | p50 ms | p95 ms | p99 ms | items |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (name, q) in &cases {
        let mut times = Vec::with_capacity(rounds);
        let mut items = 0;
        // Warm-up: the pool's connections and the server's caches, not the query, cost the first calls.
        for _ in 0..5 {
            http.get(url(q)).bearer_auth(key).send().await.expect("request");
        }
        for _ in 0..rounds {
            let started = Instant::now();
            let resp = http.get(url(q)).bearer_auth(key).send().await.expect("request");
            assert!(resp.status().is_success(), "{name}: {}", resp.status());
            let body: Value = resp.json().await.expect("json");
            times.push(started.elapsed());
            items = body["items"].as_array().map(|a| a.len()).unwrap_or(0);
        }
        times.sort();
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {items} |",
            percentile(&times, 0.5),
            percentile(&times, 0.95),
            percentile(&times, 0.99)
        );
    }

    // Deep paging: the cost of page N must not grow with N (keyset, not offset).
    println!();
    let vip = tq(json!([{"key": "vip", "type": "boolean", "value": true}]));
    for (name, filter) in [("all profiles", String::new()), ("taxonomy vip = true", format!("&{vip}"))] {
        let mut cursor: Option<String> = None;
        let mut page_times = vec![];
        for _ in 0..1000 {
            let mut q = format!("limit=50{filter}");
            if let Some(c) = &cursor {
                q.push_str(&format!("&cursor={c}"));
            }
            let started = Instant::now();
            let body: Value =
                http.get(url(&q)).bearer_auth(key).send().await.expect("page").json().await.expect("json");
            page_times.push(started.elapsed());
            match body["cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        let avg = |s: &[Duration]| s.iter().map(Duration::as_secs_f64).sum::<f64>() / s.len().max(1) as f64 * 1000.0;
        let n = page_times.len();
        println!(
            "paging ({name}): {n} pages of 50; mean of pages 1-10: {:.2} ms; mean of pages {}-{n}: {:.2} ms",
            avg(&page_times[..10.min(n)]),
            n.saturating_sub(9),
            avg(&page_times[n.saturating_sub(10)..])
        );
    }
}
