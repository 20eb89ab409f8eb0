use super::*;

const MAX: (u16, u16) = (4, 256);
const SIZE: u16 = 8;

/// A fresh two-queue area as the frontend would hand it back, and queue
/// 1's region.
fn queue() -> (Arc<InflightArea>, QueueInflight) {
    let (file, message) = InflightArea::create(2, SIZE, MAX).expect("create");
    let area = InflightArea::open(&message, &file, MAX).expect("open");
    let q = area.queue(1).expect("queue 1");
    (area, q)
}

/// What a backend started on `q`'s region recovers: (heads to resubmit,
/// where to resume in the available ring).
fn restart(q: &QueueInflight, used_idx: u16) -> Result<(Vec<u16>, u16), RegionFault> {
    let mut fresh = q.area.queue(q.index).expect("queue");
    let mut heads = Vec::new();
    let next_avail = fresh.recover(SIZE, used_idx, &mut heads)?;
    Ok((heads, next_avail))
}

fn poke<T: vm_memory::AtomicAccess>(q: &QueueInflight, at: usize, v: T) {
    q.region()
        .store(v, at, Ordering::Relaxed)
        .expect("in range");
}

#[test]
fn a_fresh_area_has_nothing_in_flight() {
    let (_area, q) = queue();
    assert_eq!(restart(&q, 0), Ok((vec![], 0)));
    assert_eq!(restart(&q, 65535), Ok((vec![], 65535)));
}

#[test]
fn heads_in_flight_come_back_in_the_order_they_were_taken() {
    let (_area, mut q) = queue();
    for head in [5, 3, 7, 0] {
        q.mark(head);
    }
    // 3 completes out of order: used index 0 -> 1.
    q.before_used(3);
    q.after_used(3, 1);
    assert_eq!(restart(&q, 1), Ok((vec![5, 7, 0], 4)));
}

#[test]
fn a_crash_before_marking_leaves_the_request_in_the_ring() {
    let (_area, mut q) = queue();
    q.mark(2);
    // Taking head 4 stored its counter, not yet its flag.
    poke(&q, HEADER_LEN + ENTRY_LEN * 4 + COUNTER_AT, 1u64);
    // Resuming at 1 takes head 4 from the available ring again.
    assert_eq!(restart(&q, 0), Ok((vec![2], 1)));
}

/// Requests 2 then 6 taken, and 6's completion begun (last_batch_head).
fn completing_6() -> (Arc<InflightArea>, QueueInflight) {
    let (area, mut q) = queue();
    q.mark(2);
    q.mark(6);
    q.before_used(6);
    (area, q)
}

#[test]
fn a_crash_before_the_used_index_moves_resubmits_the_request() {
    let (_area, q) = completing_6();
    // The guest's used index did not move: 6 did not complete.
    assert_eq!(restart(&q, 0), Ok((vec![2, 6], 2)));
}

#[test]
fn a_crash_after_the_used_index_moved_settles_the_last_completion() {
    let (_area, q) = completing_6();
    // The guest saw 6 complete (used index 1); the region did not.
    assert_eq!(restart(&q, 1), Ok((vec![2], 2)));
    // A crash between clearing the flag and storing used_idx is the same.
    q.set_flag(6, 0);
    assert_eq!(restart(&q, 1), Ok((vec![2], 2)));
}

#[test]
fn counting_goes_on_after_a_recovery() {
    let (_area, mut q) = queue();
    q.mark(1);
    q.mark(0);
    let mut heads = Vec::new();
    assert_eq!(q.recover(SIZE, 0, &mut heads), Ok(2));
    q.mark(4);
    // 4 was taken after the resubmitted ones, and comes after them.
    assert_eq!(restart(&q, 0), Ok((vec![1, 0, 4], 3)));
}

#[test]
fn the_used_index_wraps() {
    let (_area, mut q) = queue();
    q.after_used(0, 65535);
    q.mark(3);
    q.mark(1);
    assert_eq!(restart(&q, 65535), Ok((vec![3, 1], 1)));
}

#[test]
fn a_region_the_frontend_garbled_is_refused() {
    type Garble = fn(&QueueInflight);
    let cases: [(&str, Garble); 4] = [
        ("version", |q| poke(q, VERSION_AT, 2u16)),
        ("desc_num", |q| poke(q, DESC_NUM_AT, SIZE - 1)),
        ("inflight flag", |q| q.set_flag(0, 2)),
        ("last_batch_head", |q| {
            // used_idx disagrees with the ring's, and the head it names
            // is outside the region.
            poke(q, LAST_BATCH_HEAD_AT, SIZE);
            poke(q, USED_IDX_AT, 9u16);
        }),
    ];
    for (what, garble) in cases {
        let (_area, q) = queue();
        garble(&q);
        assert!(restart(&q, 0).is_err(), "{what}");
    }
}

#[test]
fn a_head_in_flight_outside_the_ring_is_refused() {
    let (_area, mut q) = queue();
    q.mark(SIZE - 1);
    let mut fresh = q.area.queue(1).expect("queue");
    let mut heads = Vec::new();
    assert_eq!(
        fresh.recover(SIZE - 1, 0, &mut heads),
        Err(RegionFault::Entry),
        "the ring shrank to 7 entries; head 7 cannot be in it"
    );
    assert_eq!(
        fresh.recover(SIZE + 1, 0, &mut heads),
        Err(RegionFault::Header),
        "a ring larger than the region"
    );
}

#[test]
fn marks_outside_the_region_are_ignored() {
    let (_area, mut q) = queue();
    q.mark(SIZE);
    q.after_used(u16::MAX, 0);
    assert_eq!(restart(&q, 0), Ok((vec![], 0)));
}

#[test]
fn an_area_of_the_wrong_shape_is_refused() {
    let (file, message) = InflightArea::create(2, SIZE, MAX).expect("create");
    type Reshape = fn(&mut VhostUserInflight);
    let cases: [(&str, Reshape); 4] = [
        ("size", |m| m.mmap_size += 64),
        ("queues", |m| m.num_queues = 5),
        ("queue size", |m| m.queue_size = 0),
        ("offset past the end", |m| m.mmap_offset = 4096),
    ];
    for (what, reshape) in cases {
        let mut bad = message;
        reshape(&mut bad);
        let refused = InflightArea::open(&bad, &file, MAX).map(|_| ());
        match (what, refused) {
            ("size", Err(InflightError::Size { .. }))
            | ("queues", Err(InflightError::Queues { .. }))
            | ("queue size", Err(InflightError::QueueSize { .. }))
            | ("offset past the end", Err(InflightError::PastEnd)) => {}
            (what, other) => panic!("{what}: {other:?}"),
        }
    }
    assert!(InflightArea::create(0, SIZE, MAX).is_err());
    assert!(InflightArea::create(1, 257, MAX).is_err());
}

#[test]
fn an_unsealed_file_is_refused() {
    // A plain file could be truncated under the mapping.
    let file = tempfile::tempfile().expect("temp file");
    let message = VhostUserInflight::new(region_len(SIZE) as u64, 0, 1, SIZE);
    file.set_len(message.mmap_size).expect("size");
    assert!(matches!(
        InflightArea::open(&message, &file, MAX),
        Err(InflightError::NotSealed)
    ));
}

#[test]
fn regions_follow_the_libvhost_user_sizes() {
    // QEMU's libvhost-user rounds 16 * size + 2 up to 64; ours (header
    // included) gives the same for the sizes QEMU uses.
    for size in [128u16, 256, 1024] {
        assert_eq!(
            region_len(size),
            (16 * usize::from(size) + 2).next_multiple_of(64)
        );
    }
}
