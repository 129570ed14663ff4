//! Issue 3/7: a library user's configuration is checked where the relay
//! starts, not only by the binary, so a bad value is an error from `start`
//! instead of a panic in a background task.

use std::time::Duration;

use cairn_relay::{ConfigError, RelayConfig, StartError};

fn config(dir: &tempfile::TempDir) -> RelayConfig {
    let mut config = RelayConfig::new(dir.path().join("data"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config
}

#[tokio::test]
async fn a_zero_interval_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut zero_gc = config(&dir);
    zero_gc.gc_interval = Duration::ZERO;
    let err = cairn_relay::start(zero_gc).await.unwrap_err();
    assert!(
        matches!(
            err,
            StartError::Config(ConfigError::Zero {
                setting: "gc_interval"
            })
        ),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "gc_interval must be above zero");
    assert!(
        !dir.path().join("data").exists(),
        "refused before anything was created"
    );

    let mut zero_reconcile = config(&dir);
    zero_reconcile.federation.reconcile_interval = Duration::ZERO;
    let err = cairn_relay::start(zero_reconcile).await.unwrap_err();
    assert_eq!(err.to_string(), "reconcile_interval must be above zero");
}

#[tokio::test]
async fn water_marks_that_never_stop_transfers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&dir);
    c.federation.high_water_permille = 700;
    c.federation.low_water_permille = 800;
    let err = cairn_relay::start(c).await.unwrap_err();
    assert!(
        matches!(err, StartError::Config(ConfigError::WaterMarks { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("high_water (70%)"), "{err}");
}

#[tokio::test]
async fn plain_http_off_loopback_is_refused_by_the_library_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&dir);
    c.listen = "0.0.0.0:0".parse().unwrap();
    let err = cairn_relay::start(c).await.unwrap_err();
    assert!(
        matches!(
            err,
            StartError::Config(ConfigError::PlainHttpExposed { .. })
        ),
        "{err:?}"
    );
}
