use super::*;

use clap::Parser;

#[derive(Parser)]
struct Serve {
    #[command(flatten)]
    args: ServeArgs,
}

fn parse(args: &[&str]) -> ServeArgs {
    let mut full = vec!["serve"];
    full.extend_from_slice(args);
    Serve::try_parse_from(full).unwrap().args
}

#[test]
fn every_flag_has_its_env_var_and_file_key() {
    let serve = serve_command();
    for arg in serve.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if long == "help" || NOT_FILE_KEYS.contains(&long) && long != "config" {
            continue;
        }
        let want = format!("GRAYSCOPE_{}", long.to_uppercase().replace('-', "_"));
        assert_eq!(
            arg.get_env().and_then(|e| e.to_str()),
            Some(want.as_str()),
            "--{long}"
        );
    }
}

#[test]
fn defaults() {
    let c = parse(&[]).resolve().unwrap();
    assert_eq!(c.otlp_grpc.to_string(), "127.0.0.1:4317");
    assert_eq!(c.otlp_http.to_string(), "127.0.0.1:4318");
    assert_eq!(c.http.to_string(), "127.0.0.1:8080");
    assert_eq!(c.max_request_bytes, 16 << 20);
    assert_eq!(c.trace_idle.0, Duration::from_secs(10));
    assert_eq!(c.instance_ttl.0, Duration::from_secs(900));
    assert_eq!(c.max_buffered_spans, 2_000_000);
    assert_eq!(
        c.verify.stage_keys,
        [
            "x-release-stage",
            "http.request.header.x-release-stage",
            "http.request.header.x_release_stage",
            "rpc.grpc.request.metadata.x-release-stage",
            "rpc.request.metadata.x-release-stage"
        ]
    );
    assert_eq!(c.verify.instance_stage_key, "deployment.stage");
}

#[test]
fn flags_override_the_file_which_overrides_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.toml");
    std::fs::write(
        &path,
        r#"
trace-idle = "500ms"
max-request-bytes = "1MiB"
workers = 3
allowed-stages = ["stable", "canary"]
declared-instances = ["orders=canary"]
exempt-roots = ["cron:nightly export", "reporter"]
"#,
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let c = parse(&["--config", p, "--workers", "5"]).resolve().unwrap();
    assert_eq!(c.trace_idle.0, Duration::from_millis(500));
    assert_eq!(c.max_request_bytes, 1 << 20);
    assert_eq!(c.workers, 5);
    assert_eq!(c.verify.allowed_stages, ["stable", "canary"]);
    assert_eq!(
        c.verify.declared_instances,
        [("orders".to_string(), "canary".to_string())]
    );
    assert_eq!(
        c.verify.exempt_roots,
        [
            ("cron".to_string(), Some("nightly export".to_string())),
            ("reporter".to_string(), None)
        ]
    );
}

#[test]
fn bad_config_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.toml");
    std::fs::write(&path, "trace_idel = \"1s\"\n").unwrap();
    let e = parse(&["--config", path.to_str().unwrap()])
        .resolve()
        .unwrap_err();
    assert!(e.to_string().contains("unknown key 'trace_idel'"), "{e}");
    std::fs::write(&path, "trace-idle = \"soon\"\n").unwrap();
    let e = parse(&["--config", path.to_str().unwrap()])
        .resolve()
        .unwrap_err();
    assert!(e.to_string().contains("not a duration"), "{e}");
    let e = parse(&["--declared-instances", "orders"])
        .resolve()
        .unwrap_err();
    assert!(
        e.to_string().contains("'orders' is not SERVICE=STAGE"),
        "{e}"
    );
    assert!(Serve::try_parse_from(["serve", "--trace-idle", "10 parsecs"]).is_err());
    let e = parse(&["--config", "/nonexistent/g.toml"])
        .resolve()
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("cannot read config file /nonexistent/g.toml"),
        "{e}"
    );
}

#[test]
fn lists_split_on_commas() {
    let c = parse(&[
        "--stage-keys",
        "a,b",
        "--allowed-stages",
        "stable",
        "--allowed-stages",
        "canary",
    ])
    .resolve()
    .unwrap();
    assert_eq!(c.verify.stage_keys, ["a", "b"]);
    assert_eq!(c.verify.allowed_stages, ["stable", "canary"]);
}

#[test]
fn stage_modes_are_service_equals_mode() {
    use crate::model::StageMode;
    let c = parse(&["--stage-modes", "orders=captured,*=every-span"])
        .resolve()
        .unwrap();
    assert_eq!(
        c.verify.stage_modes,
        [
            ("orders".to_string(), StageMode::Captured),
            ("*".to_string(), StageMode::EverySpan)
        ]
    );
    for (bad, says) in [
        ("orders=header", "'header' in 'orders=header' is not a mode"),
        ("orders", "'orders' is not SERVICE=MODE"),
        ("=captured", "'=captured' is not SERVICE=MODE"),
    ] {
        let e = parse(&["--stage-modes", bad])
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(e.contains(says) && e.contains("stage-modes"), "{e}");
    }
}

#[test]
fn an_unprotected_listener_off_loopback_is_refused() {
    let err = |args: &[&str]| parse(args).resolve().unwrap_err().to_string();
    let e = err(&["--http", "0.0.0.0:8080"]);
    assert!(
        e.contains("refusing to listen on 0.0.0.0:8080 with neither TLS nor tokens"),
        "{e}"
    );
    assert!(e.contains("--allow-insecure-listen"), "{e}");
    // The gRPC port also serves the query API: an ingest token alone does not protect it.
    let e = err(&["--otlp-grpc", "10.0.0.1:4317", "--ingest-tokens", "/t"]);
    assert!(e.starts_with("otlp-grpc: refusing"), "{e}");
    assert!(
        parse(&[
            "--otlp-grpc",
            "10.0.0.1:4317",
            "--ingest-tokens",
            "/t",
            "--read-tokens",
            "/r"
        ])
        .resolve()
        .is_ok()
    );
    assert!(
        parse(&["--otlp-http", "[::]:4318", "--ingest-tokens", "/t"])
            .resolve()
            .is_ok()
    );
    assert!(
        parse(&[
            "--http",
            "0.0.0.0:8080",
            "--tls-cert",
            "/c",
            "--tls-key",
            "/k"
        ])
        .resolve()
        .is_ok()
    );
    assert!(
        parse(&["--http", "0.0.0.0:8080", "--allow-insecure-listen"])
            .resolve()
            .is_ok()
    );
    assert!(
        parse(&["--http", "[::1]:8080"]).resolve().is_ok(),
        "loopback"
    );
}

#[test]
fn tls_files_per_listener_override_the_common_ones() {
    let c = parse(&[
        "--tls-cert",
        "/all.pem",
        "--tls-key",
        "/all.key",
        "--tls-client-ca",
        "/ca.pem",
        "--http-tls-cert",
        "/api.pem",
        "--http-tls-key",
        "/api.key",
    ])
    .resolve()
    .unwrap()
    .security;
    let grpc = c.otlp_grpc_tls.unwrap();
    assert_eq!(grpc.cert, PathBuf::from("/all.pem"));
    assert_eq!(grpc.client_ca, Some(PathBuf::from("/ca.pem")));
    let api = c.http_tls.unwrap();
    assert_eq!((api.cert, api.key), ("/api.pem".into(), "/api.key".into()));
    assert_eq!(api.client_ca, Some(PathBuf::from("/ca.pem")));
    let e = parse(&["--otlp-http-tls-cert", "/c.pem"])
        .resolve()
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs its key"), "{e}");
    let e = parse(&["--tls-client-ca", "/ca.pem"])
        .resolve()
        .unwrap_err()
        .to_string();
    assert!(e.contains("a client CA needs a certificate"), "{e}");
}

#[test]
fn cors_origins_are_web_origins() {
    let c = parse(&[
        "--otlp-http-cors-origins",
        "https://shop.example.com,http://127.0.0.1:3000",
    ])
    .resolve()
    .unwrap();
    assert_eq!(
        c.otlp_http_cors_origins,
        ["https://shop.example.com", "http://127.0.0.1:3000"]
    );
    assert!(parse(&["--otlp-http-cors-origins", "*"]).resolve().is_ok());
    for bad in [
        "shop.example.com",
        "https://shop.example.com/",
        "https://a.b/x",
        "ftp://a.b",
    ] {
        let e = parse(&["--otlp-http-cors-origins", bad])
            .resolve()
            .unwrap_err();
        assert!(e.to_string().contains("is not a web origin"), "{bad}: {e}");
    }
}

#[test]
fn services_group_by_a_resource_key() {
    assert_eq!(parse(&[]).resolve().unwrap().group_key, "service.namespace");
    let c = parse(&["--group-key", "team"]).resolve().unwrap();
    assert_eq!(c.group_key, "team");
    let e = parse(&["--group-key", ""])
        .resolve()
        .unwrap_err()
        .to_string();
    assert!(e.contains("group-key"), "{e}");
}
