//! A bounded stress test: concurrent readers and writers over two applications (two
//! processes' worth of pools and caches), and a checker that no read which started
//! after a write was acknowledged returned data older than that write.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use listings::metrics::CacheKind;
use listings::service::properties;
use rand::Rng as _;
use tokio::task::JoinSet;

use crate::both_modes;
use crate::support::{TestEnv, get, new_property, router};

const WRITERS: usize = 3;
const WRITES_EACH: usize = 12;
const READERS: usize = 6;
/// Each reader reads until the writers are done and then this many more times; cache
/// hits are so fast that a fixed count would be over before the first write.
const READS_AFTER_WRITES: usize = 10;
const MAX_READS_EACH: usize = 5_000;

both_modes!(no_read_is_older_than_an_acknowledged_write);

#[derive(Debug)]
enum Change {
    Created,
    Deleted,
}

#[derive(Debug)]
struct Write {
    title: String,
    change: Change,
    started: Duration,
    acknowledged: Duration,
}

struct Read {
    started: Duration,
    finished: Duration,
    titles: HashSet<String>,
}

async fn pause_briefly() {
    let micros = rand::rng().random_range(0..2_000);
    tokio::time::sleep(Duration::from_micros(micros)).await;
}

async fn no_read_is_older_than_an_acknowledged_write(env: TestEnv) {
    let apps = [env.app().await, env.app().await];
    let routers = [router(&apps[0]), router(&apps[1])];
    let clock = Instant::now();

    let mut writers = JoinSet::new();
    for writer in 0..WRITERS {
        let apps = apps.clone();
        writers.spawn(async move {
            let mut log = Vec::new();
            let mut alive = Vec::new();
            for step in 0..WRITES_EACH {
                let app = &apps[step % 2];
                pause_briefly().await;
                let started = clock.elapsed();
                if step % 3 == 2 && !alive.is_empty() {
                    let (id, title): (i64, String) = alive.remove(0);
                    properties::delete_property(app, id).await.expect("delete");
                    log.push(Write {
                        title,
                        change: Change::Deleted,
                        started,
                        acknowledged: clock.elapsed(),
                    });
                } else {
                    let title = format!("w{writer}-{step}");
                    let created =
                        properties::create_property(app, &new_property(&title, "1.00", "Lamu"))
                            .await
                            .expect("create");
                    log.push(Write {
                        title: title.clone(),
                        change: Change::Created,
                        started,
                        acknowledged: clock.elapsed(),
                    });
                    alive.push((created.id, title));
                }
            }
            log
        });
    }
    let writing = Arc::new(AtomicBool::new(true));
    let mut readers = JoinSet::new();
    for reader in 0..READERS {
        let routers = routers.clone();
        let writing = writing.clone();
        readers.spawn(async move {
            let mut log = Vec::new();
            let mut after_writes = 0;
            for step in 0..MAX_READS_EACH {
                if !writing.load(Ordering::Acquire) {
                    after_writes += 1;
                    if after_writes > READS_AFTER_WRITES {
                        break;
                    }
                }
                pause_briefly().await;
                let started = clock.elapsed();
                let response = get(&routers[(reader + step) % 2], "/properties/").await;
                let finished = clock.elapsed();
                assert_eq!(response.status, 200);
                log.push(Read {
                    started,
                    finished,
                    titles: response.titles().into_iter().collect(),
                });
            }
            log
        });
    }
    let writes: Vec<Write> = writers.join_all().await.into_iter().flatten().collect();
    writing.store(false, Ordering::Release);
    let reads: Vec<Read> = readers.join_all().await.into_iter().flatten().collect();

    let mut checks = 0;
    for read in &reads {
        for write in &writes {
            if write.acknowledged >= read.started {
                continue;
            }
            match write.change {
                Change::Created => {
                    // Unless a delete of it overlapped the read, it must be there.
                    let deleted_meanwhile = writes.iter().any(|w| {
                        w.title == write.title
                            && matches!(w.change, Change::Deleted)
                            && w.started < read.finished
                    });
                    if !deleted_meanwhile {
                        assert!(
                            read.titles.contains(&write.title),
                            "stale read: {} missing",
                            write.title
                        );
                        checks += 1;
                    }
                }
                Change::Deleted => {
                    assert!(
                        !read.titles.contains(&write.title),
                        "stale read: deleted {} still listed",
                        write.title
                    );
                    checks += 1;
                }
            }
        }
    }
    let view_hits: u64 = apps
        .iter()
        .map(|a| a.metrics.cache(CacheKind::View).hits)
        .sum();
    println!(
        "stress: {} reads checked against {} acknowledged writes ({checks} assertions, {view_hits} view hits)",
        reads.len(),
        writes.len()
    );
    assert!(
        reads.len() < READERS * MAX_READS_EACH,
        "the writers finished in time"
    );
    assert!(
        checks > reads.len(),
        "the checker had writes to check against"
    );
    assert!(
        view_hits > 0,
        "the cache served some reads, so the check covered it"
    );
}
