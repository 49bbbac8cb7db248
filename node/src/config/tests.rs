use std::path::PathBuf;

use super::*;
use store::{PrewriteMode, SyncMode};

fn shipped() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc/data-node.yaml");
    std::fs::read_to_string(path).expect("etc/data-node.yaml is shipped")
}

#[test]
fn shipped_config_parses_and_validates() {
    let config = Config::parse(&shipped(), "etc/data-node.yaml").expect("parses");
    config.validate().expect("validates");
    // The shipped file must suit a 2-core laptop: one worker, no spinning SQPOLL thread,
    // data under the working directory.
    assert_eq!(config.server.workers, 1);
    assert!(!config.store.uring.sqpoll);
    assert!(config.store.path.is_relative());
    assert_eq!(config.store.sync, SyncMode::Always);
}

#[test]
fn shipped_config_sets_every_key() {
    // Every key has a comment in etc/; a key missing from the file would silently use the
    // code default, so compare the parsed file against a document listing every key.
    let text = shipped();
    for key in [
        "listen:",
        "advertised-address:",
        "workers:",
        "cpu-set:",
        "max-connections:",
        "max-in-flight-per-connection:",
        "max-frame-size-bytes:",
        "idle-timeout-ms:",
        "max-buffered-bytes-per-connection:",
        "max-buffered-bytes:",
        "grace-period-ms:",
        "path:",
        "segment-size-bytes:",
        "preallocated-segments:",
        "sync:",
        "prewrite:",
        "cache-size-bytes:",
        "worker-queue-capacity:",
        "io-thread-cpu:",
        "checkpoint-interval-ms:",
        "queue-depth:",
        "sqpoll:",
        "sqpoll-idle-ms:",
        "sqpoll-cpu:",
        "iopoll:",
        "enabled:",
        "addr:",
        "level:",
    ] {
        assert!(text.contains(key), "etc/data-node.yaml lacks {key}");
    }
}

#[test]
fn empty_text_is_all_defaults() {
    let config = Config::parse("", "test").unwrap();
    assert_eq!(config, Config::default());
    config.validate().unwrap();
    assert!(config.server.workers >= 1);
    assert_eq!(config.server.max_frame_size_bytes, 16 * 1024 * 1024);
    assert_eq!(config.listen_address().port(), 10911);
    assert_eq!(config.metrics_address().unwrap().port(), 9911);
}

#[test]
fn prewrite_mode_reaches_the_store() {
    let config = Config::parse("", "test").unwrap();
    assert_eq!(config.store.prewrite, PrewriteMode::Idle);
    assert_eq!(config.store_config().prewrite, store::PrewriteMode::Idle);
    let config = Config::parse("store:\n  prewrite: always\n", "test").unwrap();
    assert_eq!(config.store_config().prewrite, store::PrewriteMode::Always);
    let error = Config::parse("store:\n  prewrite: sometimes\n", "test.yaml").unwrap_err();
    assert!(error.to_string().contains("prewrite"), "{error}");
}

#[test]
fn partial_sections_keep_defaults_for_the_rest() {
    let config = Config::parse("server:\n  workers: 3\nstore:\n  sync: never\n", "test").unwrap();
    assert_eq!(config.server.workers, 3);
    assert_eq!(config.server.listen, ServerConfig::default().listen);
    assert_eq!(config.store.sync, SyncMode::Never);
    assert_eq!(config.store.path, PathBuf::from("./data"));
}

#[test]
fn unknown_key_error_names_the_key() {
    let error = Config::parse("server:\n  wrokers: 2\n", "test.yaml").unwrap_err();
    let message = error.to_string();
    assert!(message.contains("wrokers"), "{message}");
    assert!(message.contains("test.yaml"), "{message}");

    let error = Config::parse("store:\n  uring:\n    spqoll: true\n", "test.yaml").unwrap_err();
    assert!(error.to_string().contains("spqoll"), "{error}");

    let error = Config::parse("bogus-section: {}\n", "test.yaml").unwrap_err();
    assert!(error.to_string().contains("bogus-section"), "{error}");
}

#[test]
fn wrong_type_is_a_parse_error() {
    let error = Config::parse("server:\n  workers: many\n", "test.yaml").unwrap_err();
    assert!(matches!(error, ConfigError::Parse { .. }));
    assert!(error.to_string().contains("workers"), "{error}");
    let error = Config::parse("store:\n  sync: sometimes\n", "test.yaml").unwrap_err();
    assert!(error.to_string().contains("sometimes"), "{error}");
}

#[test]
fn bad_values_are_named_with_expected_form() {
    let text = "server:\n  workers: 0\n  listen: nowhere\n  max-frame-size-bytes: 10\n\
                store:\n  segment-size-bytes: 1000\n  worker-queue-capacity: 3\n\
                metrics:\n  addr: \"x\"\nlog:\n  level: loud\n";
    let config = Config::parse(text, "test").unwrap();
    let ConfigError::Invalid(problems) = config.validate().unwrap_err() else {
        panic!("expected validation errors");
    };
    let all = problems.join("\n");
    assert!(
        all.contains("server.workers: expected 1..=64, found 0"),
        "{all}"
    );
    assert!(all.contains("server.listen: expected host:port"), "{all}");
    assert!(
        all.contains("server.max-frame-size-bytes: expected"),
        "{all}"
    );
    assert!(
        all.contains("store.segment-size-bytes: expected a multiple of 4096"),
        "{all}"
    );
    assert!(
        all.contains("store.worker-queue-capacity: expected a power of two"),
        "{all}"
    );
    assert!(all.contains("metrics.addr: expected host:port"), "{all}");
    assert!(all.contains("log.level: expected one of"), "{all}");
    assert_eq!(problems.len(), 7, "{all}");
}

#[test]
fn disabled_metrics_need_no_address() {
    let config = Config::parse("metrics:\n  enabled: false\n  addr: \"\"\n", "test").unwrap();
    config.validate().unwrap();
    assert_eq!(config.metrics_address(), None);
}

#[test]
fn workers_are_pinned_round_robin_over_the_cpu_set() {
    let mut config = Config::default();
    assert_eq!(config.worker_cpu(0), None);
    config.server.cpu_set = vec![0, 1];
    assert_eq!(config.worker_cpu(0), Some(0));
    assert_eq!(config.worker_cpu(1), Some(1));
    assert_eq!(config.worker_cpu(2), Some(0));
}

/// The dotted keys (`store.uring.sqpoll`) of every leaf in a YAML mapping.
fn leaf_keys(value: &serde_yaml_ng::Value, prefix: &str, keys: &mut Vec<String>) {
    match value {
        serde_yaml_ng::Value::Mapping(mapping) => {
            for (key, child) in mapping {
                let key = key.as_str().expect("string keys");
                let path = if prefix.is_empty() {
                    key.to_string()
                } else {
                    format!("{prefix}.{key}")
                };
                leaf_keys(child, &path, keys);
            }
        }
        _ => keys.push(prefix.to_string()),
    }
}

fn shipped_keys() -> Vec<String> {
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&shipped()).unwrap();
    let mut keys = Vec::new();
    leaf_keys(&value, "", &mut keys);
    keys
}

#[test]
fn shipped_values_are_the_defaults_and_cover_every_key() {
    // The one deliberate difference: one worker (the default is one per CPU), so that on a
    // 2-core machine the IO thread has the other core.
    let mut expected = Config::default();
    expected.server.workers = 1;
    let config = Config::parse(&shipped(), "etc/data-node.yaml").unwrap();
    assert_eq!(config, expected);

    // Every key the code reads is in the file, and the file has no key the code lacks
    // (unknown keys are refused anyway; this also catches a key the file leaves out).
    let mut from_code = Vec::new();
    leaf_keys(
        &serde_yaml_ng::to_value(Config::default()).unwrap(),
        "",
        &mut from_code,
    );
    let mut in_file = shipped_keys();
    from_code.sort();
    in_file.sort();
    assert_eq!(from_code, in_file);
    // Test-only fault injection is not a key.
    assert!(
        !shipped().contains("inject"),
        "etc/ mentions fault injection"
    );
    assert!(!shipped().contains("without-poll-queues"));
    let error = Config::parse(
        "store:\n  uring:\n    iopoll-without-poll-queues: true\n",
        "test.yaml",
    )
    .unwrap_err();
    assert!(matches!(error, ConfigError::Parse { .. }), "{error}");
    let error =
        Config::parse("store:\n  inject-group-write-results: []\n", "test.yaml").unwrap_err();
    assert!(matches!(error, ConfigError::Parse { .. }), "{error}");
}

/// Dotted keys (`store.segment-size-bytes`) a message names.
fn named_keys(message: &str) -> Vec<String> {
    message
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-'))
        .map(|token| token.trim_end_matches('.'))
        .filter(|token| {
            ["server.", "store.", "metrics.", "log.", "catalog.", "auth."]
                .iter()
                .any(|section| token.starts_with(section))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn every_validation_error_names_a_shipped_key() {
    let keys = shipped_keys();
    let check = |message: &str| {
        // The message starts with the key it is about (`section.key: expected ...`), or,
        // for a value the node derives, names the keys it is derived from.
        let named = named_keys(message);
        assert!(!named.is_empty(), "names no key: {message}");
        for key in named {
            assert!(
                keys.contains(&key),
                "{key} is not in etc/data-node.yaml: {message}"
            );
        }
    };

    // One bad value for each of the node's checks.
    let node_cases = [
        "server:\n  listen: nowhere\n",
        "server:\n  advertised-address: nowhere\n",
        "server:\n  workers: 0\n",
        "server:\n  cpu-set: [100000]\n",
        "server:\n  max-connections: 0\n",
        "server:\n  max-in-flight-per-connection: 0\n",
        "server:\n  max-frame-size-bytes: 10\n",
        "server:\n  max-buffered-bytes-per-connection: 4096\n",
        "server:\n  max-buffered-bytes: 4096\n",
        "server:\n  grace-period-ms: 600001\n",
        "store:\n  path: \"\"\n",
        "store:\n  segment-size-bytes: 1000\n",
        "store:\n  preallocated-segments: 0\n",
        "store:\n  worker-queue-capacity: 3\n",
        "store:\n  io-thread-cpu: 100000\n",
        "store:\n  checkpoint-interval-ms: 1\n",
        "store:\n  uring:\n    queue-depth: 3\n",
        "store:\n  uring:\n    sqpoll: true\n    sqpoll-cpu: 100000\n",
        "store:\n  uring:\n    sqpoll-cpu: 0\n",
        "metrics:\n  addr: x\n",
        "log:\n  level: loud\n",
        "catalog:\n  max-ranges: 0\n",
        "auth:\n  admin-token: short\n",
        "auth:\n  client-token: client-token-0123456789\n",
    ];
    for text in node_cases {
        let config = Config::parse(text, "test").unwrap();
        let ConfigError::Invalid(problems) = config.validate().unwrap_err() else {
            panic!("{text}: expected validation errors");
        };
        for problem in &problems {
            check(problem);
        }
    }

    // One bad value for each of the store's checks, on a configuration the node produced.
    let valid = Config::default().store_config();
    valid.validate().unwrap();
    let mut store_cases = Vec::new();
    let mut config = valid.clone();
    config.segment_size_bytes = 1000;
    store_cases.push(config);
    let mut config = valid.clone();
    config.max_group_bytes = 1000;
    store_cases.push(config);
    let mut config = valid.clone();
    config.read_block_size_bytes = 1000;
    store_cases.push(config);
    let mut config = valid.clone();
    config.preallocated_segments = 0;
    store_cases.push(config);
    let mut config = valid.clone();
    config.worker_queue_capacity = 0;
    store_cases.push(config);
    let mut config = valid.clone();
    config.uring.queue_depth = 3;
    store_cases.push(config);
    for config in store_cases {
        let store::Error::Config(message) = config.validate().unwrap_err() else {
            panic!("expected a configuration error");
        };
        check(&message);
    }
}

#[test]
fn store_keys_use_the_store_defaults() {
    // One default per key: the node's `store` section is the store's own type.
    let config = Config::parse("store:\n  sync: never\n", "test").unwrap();
    let expected = StoreConfig {
        sync: SyncMode::Never,
        ..StoreConfig::default()
    };
    assert_eq!(config.store, expected);
    let derived = config.store_config();
    assert!(derived.max_group_bytes >= config.server.max_frame_size_bytes);
    assert_eq!(
        derived.segment_size_bytes % derived.read_block_size_bytes as u64,
        0
    );
    derived.validate().unwrap();
}
