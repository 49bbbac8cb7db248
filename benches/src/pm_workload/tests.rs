use super::*;
use clap::Parser;

#[derive(Parser)]
struct TestCli {
    #[command(flatten)]
    args: PmArgs,
}

fn parse(arguments: &[&str]) -> Result<PmArgs, clap::Error> {
    TestCli::try_parse_from(std::iter::once("pm").chain(arguments.iter().copied()))
        .map(|cli| cli.args)
}

#[test]
fn defaults_are_64_clients_one_connection_each_creating_streams() {
    let plan = parse(&[]).unwrap().plan().unwrap();
    assert_eq!(plan.operation, PmOperation::CreateStream);
    assert_eq!(plan.clients, 64);
    assert_eq!(plan.connections, 64);
    assert_eq!((plan.replica_count, plan.ack_count), (1, 1));
    assert_eq!(plan.duration, Duration::from_secs(10));
    assert_eq!(plan.address, "127.0.0.1:12378".parse().unwrap());
}

#[test]
fn options_parse_into_the_plan() {
    let args = parse(&[
        "--pm",
        "127.0.0.1:4000",
        "-c",
        "16",
        "--connections",
        "4",
        "-d",
        "2.5",
        "--op",
        "range-pairs",
        "--baseline-dir",
        "/tmp",
        "--json",
        "out.json",
    ])
    .unwrap();
    assert_eq!(args.baseline_dir, Some(PathBuf::from("/tmp")));
    assert_eq!(args.json, Some(PathBuf::from("out.json")));
    let plan = args.plan().unwrap();
    assert_eq!(plan.operation, PmOperation::RangePairs);
    assert_eq!((plan.clients, plan.connections), (16, 4));
    assert_eq!(plan.duration, Duration::from_millis(2500));
    // Range pairs use streams replicated on three nodes, two acknowledging.
    assert_eq!((plan.replica_count, plan.ack_count), (3, 2));
    assert_eq!(
        parse(&["--op", "update-epoch"]).unwrap().op,
        PmOperation::UpdateEpoch
    );
    assert_eq!(parse(&["--op", "mixed"]).unwrap().op, PmOperation::Mixed);
}

#[test]
fn bad_options_are_refused_with_the_option_named() {
    assert!(parse(&["--op", "delete-stream"]).is_err());
    let refused = |arguments: &[&str], needle: &str| {
        let error = parse(arguments).unwrap().plan().unwrap_err();
        assert!(error.contains(needle), "{error}");
    };
    refused(&["-c", "0"], "--clients");
    refused(&["-c", "4", "--connections", "5"], "--connections 5");
    refused(&["-c", "4", "--connections", "0"], "--connections 0");
    refused(
        &["-c", "600", "--connections", "2"],
        "in flight per connection",
    );
    refused(&["--create-percent", "101"], "--create-percent");
    refused(&["-d", "0"], "--duration-secs");
    refused(&["--warmup-secs=-1"], "--warmup-secs");
    refused(
        &["--op", "range-pairs", "--range-ack-count", "4"],
        "1 <= A <= R",
    );
    refused(&["--pm", "not an address"], "--pm");
}

#[test]
fn mixed_runs_the_asked_share_of_creates_spread_evenly() {
    for percent in [0u8, 1, 10, 33, 50, 90, 100] {
        let creates = (0..1000).filter(|&n| mixed_is_create(n, percent)).count();
        assert_eq!(creates, usize::from(percent) * 10, "{percent} %");
    }
    // Half and half alternate rather than coming in blocks.
    let pattern: Vec<bool> = (0..6).map(|n| mixed_is_create(n, 50)).collect();
    assert_eq!(pattern, [false, true, false, true, false, true]);
    // A quarter: one create in every four operations.
    let creates_per_window: Vec<usize> = (0..25)
        .map(|window| {
            (window * 4..window * 4 + 4)
                .filter(|&n| mixed_is_create(n, 25))
                .count()
        })
        .collect();
    assert!(creates_per_window.iter().all(|&count| count == 1));
}

#[test]
fn clients_spread_evenly_over_connections_and_connections_over_threads() {
    let per_connection = |clients: usize, connections: usize| {
        let mut counts = vec![0; connections];
        for client in 0..clients {
            counts[connection_of(client, connections)] += 1;
        }
        counts
    };
    assert_eq!(per_connection(64, 64), vec![1; 64]);
    assert_eq!(per_connection(64, 4), vec![16; 4]);
    assert_eq!(per_connection(10, 4), vec![3, 3, 2, 2]);
    assert_eq!(thread_of(5, 2), 1);
    assert_eq!(thread_of(5, 1), 0);
}

#[test]
fn raw_sync_baseline_syncs_one_record_at_a_time() {
    let directory = tempfile::tempdir().unwrap();
    let baseline = raw_sync_baseline(directory.path(), Duration::from_millis(50)).unwrap();
    assert!(baseline.syncs > 0);
    assert_eq!(baseline.latency.count, baseline.syncs);
    assert!(baseline.syncs_per_second > 0.0);
    // The file is a temporary one: nothing is left behind.
    assert_eq!(fs::read_dir(directory.path()).unwrap().count(), 0);
}

#[test]
fn pm_side_counts_commands_per_sync_from_the_metrics() {
    let scrape = |commands: u64, syncs: u64| {
        metrics::parse(&format!(
            "# TYPE es_pm_commands_total counter\nes_pm_commands_total {commands}\n\
             # TYPE es_pm_log_data_syncs gauge\nes_pm_log_data_syncs {syncs}\n"
        ))
    };
    let side = pm_side(&scrape(100, 10), &scrape(1100, 60), 2.0);
    assert_eq!(side.commands, 1000.0);
    assert_eq!(side.log_data_syncs, 50.0);
    assert_eq!(side.log_data_syncs_per_second, 25.0);
    assert_eq!(side.commands_per_sync, 20.0);
}
