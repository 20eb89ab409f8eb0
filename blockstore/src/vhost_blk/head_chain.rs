//! A descriptor chain looked up by its head index, for the requests a
//! backend resubmits after a restart: their place in the available ring is
//! gone, only their heads are in the inflight region. virtio-queue builds
//! chains only from the available ring (its `DescriptorChain::new` is
//! crate-private), so this walks the descriptor table the way it does:
//! at most a table's worth of links, one level of indirect table.

use std::ops::Deref;

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestMemory};

const DESC_LEN: u64 = 16;
const VRING_DESC_F_NEXT: u16 = virtio_bindings::virtio_ring::VRING_DESC_F_NEXT as u16;
const VRING_DESC_F_INDIRECT: u16 = virtio_bindings::virtio_ring::VRING_DESC_F_INDIRECT as u16;

/// The descriptors of the chain starting at a head, in order; it ends
/// early (as virtio-queue's does) at a link outside its table, a table
/// outside guest memory, a nested indirect table, or a loop.
pub(crate) struct HeadChain<M> {
    mem: M,
    table: u64,
    table_len: u16,
    next: Option<u16>,
    /// Links left before the chain counts as a loop.
    ttl: u16,
    indirect: bool,
}

impl<M> HeadChain<M>
where
    M: Deref,
    M::Target: GuestMemory,
{
    /// The chain at `head` of the ring whose descriptor table is at
    /// `desc_table` and holds `queue_size` entries.
    pub(crate) fn new(mem: M, desc_table: u64, queue_size: u16, head: u16) -> Self {
        HeadChain {
            mem,
            table: desc_table,
            table_len: queue_size,
            next: (head < queue_size).then_some(head),
            ttl: queue_size,
            indirect: false,
        }
    }

    fn read(&self, index: u16) -> Option<Descriptor> {
        let addr = self
            .table
            .checked_add(u64::from(index) * DESC_LEN)
            .map(GuestAddress)?;
        self.mem.read_obj::<Descriptor>(addr).ok()
    }
}

impl<M> Iterator for HeadChain<M>
where
    M: Deref,
    M::Target: GuestMemory,
{
    type Item = Descriptor;

    fn next(&mut self) -> Option<Descriptor> {
        let index = self.next.take()?;
        if self.ttl == 0 || index >= self.table_len {
            return None;
        }
        self.ttl -= 1;
        let desc = self.read(index)?;
        if desc.flags() & VRING_DESC_F_INDIRECT != 0 {
            let entries = u64::from(desc.len()) / DESC_LEN;
            if self.indirect
                || u64::from(desc.len()) % DESC_LEN != 0
                || entries == 0
                || entries > u64::from(u16::MAX)
            {
                return None;
            }
            self.indirect = true;
            self.table = desc.addr().0;
            self.table_len = entries as u16;
            self.ttl = self.table_len;
            self.next = Some(0);
            return self.next();
        }
        if desc.flags() & VRING_DESC_F_NEXT != 0 {
            self.next = Some(desc.next());
        }
        Some(desc)
    }
}

#[cfg(test)]
mod tests {
    use vm_memory::GuestMemoryMmap;

    use super::*;

    const TABLE: u64 = 0x1000;
    const INDIRECT: u64 = 0x2000;

    fn memory() -> GuestMemoryMmap<()> {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).expect("memory")
    }

    /// Writes descriptor (addr, len, flags, next) at `index` of `table`.
    fn put(mem: &GuestMemoryMmap<()>, table: u64, index: u64, desc: (u64, u32, u16, u16)) {
        let desc = Descriptor::new(desc.0, desc.1, desc.2, desc.3);
        mem.write_obj(desc, GuestAddress(table + index * DESC_LEN))
            .expect("in memory");
    }

    fn addrs(mem: &GuestMemoryMmap<()>, head: u16) -> Vec<u64> {
        HeadChain::new(mem, TABLE, 8, head)
            .map(|d| d.addr().0)
            .collect()
    }

    #[test]
    fn follows_links_from_the_head() {
        let mem = memory();
        put(&mem, TABLE, 5, (0x5000, 16, VRING_DESC_F_NEXT, 2));
        put(&mem, TABLE, 2, (0x6000, 512, VRING_DESC_F_NEXT, 7));
        put(&mem, TABLE, 7, (0x7000, 1, 2, 0));
        assert_eq!(addrs(&mem, 5), [0x5000, 0x6000, 0x7000]);
        assert_eq!(addrs(&mem, 7), [0x7000]);
    }

    #[test]
    fn follows_one_indirect_table() {
        let mem = memory();
        put(&mem, TABLE, 3, (INDIRECT, 32, VRING_DESC_F_INDIRECT, 0));
        put(&mem, INDIRECT, 0, (0x5000, 16, VRING_DESC_F_NEXT, 1));
        put(&mem, INDIRECT, 1, (0x6000, 1, 2, 0));
        assert_eq!(addrs(&mem, 3), [0x5000, 0x6000]);
    }

    #[test]
    fn stops_at_loops_bad_links_and_nested_tables() {
        let mem = memory();
        put(&mem, TABLE, 0, (0x5000, 16, VRING_DESC_F_NEXT, 1));
        put(&mem, TABLE, 1, (0x6000, 16, VRING_DESC_F_NEXT, 0));
        assert_eq!(addrs(&mem, 0).len(), 8, "a loop ends after a table's worth");
        put(&mem, TABLE, 2, (0x5000, 16, VRING_DESC_F_NEXT, 9));
        assert_eq!(addrs(&mem, 2), [0x5000], "a link outside the table");
        assert!(addrs(&mem, 8).is_empty(), "a head outside the table");
        put(&mem, TABLE, 3, (INDIRECT, 16, VRING_DESC_F_INDIRECT, 0));
        put(&mem, INDIRECT, 0, (INDIRECT, 16, VRING_DESC_F_INDIRECT, 0));
        assert!(addrs(&mem, 3).is_empty(), "a nested indirect table");
        put(&mem, TABLE, 4, (INDIRECT, 20, VRING_DESC_F_INDIRECT, 0));
        assert!(addrs(&mem, 4).is_empty(), "a table of partial entries");
        put(&mem, TABLE, 6, (u64::MAX - 8, 16, VRING_DESC_F_INDIRECT, 0));
        assert!(addrs(&mem, 6).is_empty(), "a table outside memory");
    }
}
