//! Without the tracker as global allocator: `start` refuses with `NotInstalled`, the
//! always-on totals stay zero, and the baseline store (plain data) keeps its bound.

use heapwatch_tracker::{self as memory, Baselines, MemoryError, Mode, Snapshot, TrackingConfig};

#[test]
fn start_without_the_global_allocator_is_not_installed() {
    let config = TrackingConfig {
        mode: Mode::Sampled,
        frames: 16,
        sample_interval_bytes: 512 * 1024,
        seed: None,
    };
    assert_eq!(memory::start(config), Err(MemoryError::NotInstalled));
    assert!(!memory::status().enabled);
    let totals = memory::totals();
    assert_eq!((totals.current_bytes, totals.total_allocations), (0, 0));
    let snap = memory::take_snapshot();
    assert_eq!(snap.stack_count(), 0);
    assert!(snap.statistics(memory::GroupBy::Site, 10).is_empty());
}

fn snapshot_at(secs: u64) -> Snapshot {
    let mut snap = Snapshot::default();
    snap.taken_at = Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
    snap
}

#[test]
fn baselines_hold_at_most_eight_names() {
    let mut baselines = Baselines::default();
    // Saved out of order: listing is sorted.
    for i in (0..Baselines::MAX as u64).rev() {
        baselines
            .save(&format!("b{i}"), snapshot_at(i))
            .expect("room for eight");
    }
    let names: Vec<String> = (0..Baselines::MAX).map(|i| format!("b{i}")).collect();
    let listed = baselines.list();
    assert_eq!(
        listed.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
        names
    );
    assert_eq!(listed[3].1, snapshot_at(3).taken_at);

    // A ninth new name is refused with the sorted names.
    assert_eq!(
        baselines.save("a-ninth", snapshot_at(99)),
        Err(MemoryError::BaselinesFull {
            max: 8,
            names: names.clone()
        })
    );
    assert!(baselines.get("a-ninth").is_none());

    // Overwriting a saved name is fine.
    baselines.save("b2", snapshot_at(42)).expect("overwrite");
    assert_eq!(
        baselines.get("b2").and_then(|s| s.taken_at),
        snapshot_at(42).taken_at
    );
    assert_eq!(baselines.list().len(), 8);

    // Removing makes room.
    assert!(baselines.remove("b5"));
    assert!(!baselines.remove("b5"));
    baselines
        .save("a-ninth", snapshot_at(99))
        .expect("room again");
    assert_eq!(baselines.list()[0].0, "a-ninth");
    assert_eq!(baselines.len(), 8);
}
