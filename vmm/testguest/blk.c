/* virtio-blk (virtio v1.2, 5.2): capacity, GET_ID, then a pattern written
 * to blk.count sectors from blk.sector, flushed, read back and verified;
 * the first half polled, the second half interrupt-driven (MSI-X), then
 * the whole range read back once more. See README.md for the pattern.
 * With blk.bench=MS, instead: polled random reads of blk.req sectors with
 * blk.depth requests always in flight, for MS milliseconds. */
#include "clock.h"
#include "console.h"
#include "devices.h"
#include "memory.h"
#include "startinfo.h"
#include "virtq.h"

#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH 9

#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8

#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_UNSUPP 2

#define CFG_CAPACITY 0
#define CFG_BLK_SIZE 20

#define SECTOR 512
#define MAX_REQ_SECTORS 64
#define MAX_DEPTH 16
#define ID_LEN 20
#define TIMEOUT_MS 10000

/* The interrupt vector of the request queue's MSI-X entry 0. */
#define VEC_BLK 0x41

struct blk_hdr {
	u32 type;
	u32 reserved;
	u64 sector;
};

struct blk_req {
	struct blk_hdr hdr;
	u8 status;
	bool done;
	u8 *data;
	u32 len;
};

struct blk {
	struct virtio_dev dev;
	struct virtq q;
	struct blk_req *reqs; /* MAX_DEPTH of them */
	u64 seed;
	u32 req_sectors;
	u32 depth;
	bool msix;
	u32 irqs;    /* interrupts during the irq phases */
	u32 wakeups; /* waits an interrupt ended */
	u64 verified;
};

/* Word i (0..63, little-endian) of sector s: splitmix64's finalizer over
 * seed * 2^32 + s * 64 + i (wrapping). */
static u64 pattern_word(u64 seed, u64 sector, u32 i)
{
	u64 z = (seed << 32) + sector * 64 + i;
	z += 0x9E3779B97F4A7C15ull;
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static void fill(u8 *buf, u64 seed, u64 sector, u32 count)
{
	u64 *w = (u64 *)buf;
	for (u32 s = 0; s < count; s++)
		for (u32 i = 0; i < SECTOR / 8; i++)
			*w++ = pattern_word(seed, sector + s, i);
}

static bool check(const u8 *buf, u64 seed, u64 sector, u32 count)
{
	const u64 *w = (const u64 *)buf;
	for (u32 s = 0; s < count; s++)
		for (u32 i = 0; i < SECTOR / 8; i++, w++)
			if (*w != pattern_word(seed, sector + s, i)) {
				report("blk fail verify sector=%lu offset=%u read=0x%016lx want=0x%016lx", sector + s,
				       i * 8, *w, pattern_word(seed, sector + s, i));
				return false;
			}
	return true;
}

/* Puts requests reqs[0..n) on the ring, notifies once, and waits for all
 * of them: spinning on the used ring, or (irq) with RFLAGS.IF=1 spinning
 * on the MSI-X vector's count and looking at the ring only after it moved
 * (without EVENT_IDX and with avail flags 0, the device must interrupt
 * after each used-ring update, 2.7.7.2). */
static bool run(struct blk *b, int n, bool irq)
{
	for (int i = 0; i < n; i++) {
		struct blk_req *r = &b->reqs[i];
		struct vbuf hdr = {&r->hdr, sizeof(r->hdr)};
		struct vbuf data = {r->data, r->len};
		struct vbuf status = {&r->status, 1};
		struct vbuf in[2] = {data, status};
		bool ok;
		r->done = false;
		r->status = 0xFF;
		if (r->len == 0)
			ok = virtq_add(&b->q, &hdr, 1, &status, 1, r);
		else if (r->hdr.type == VIRTIO_BLK_T_OUT)
			ok = virtq_add(&b->q, (struct vbuf[]){hdr, data}, 2, &status, 1, r);
		else
			ok = virtq_add(&b->q, &hdr, 1, in, 2, r);
		if (!ok) {
			report("blk fail ring full");
			return false;
		}
	}
	virtq_interrupts(&b->q, irq);
	u32 seen = irq_counts[VEC_BLK];
	virtq_kick(&b->q);

	u64 deadline = deadline_after_ms(TIMEOUT_MS);
	int completed = 0;
	while (completed < n) {
		if (irq) {
			while (irq_counts[VEC_BLK] == seen && !deadline_passed(deadline))
				cpu_relax();
			seen = irq_counts[VEC_BLK];
			b->wakeups++;
		}
		u32 len;
		struct blk_req *r;
		while ((r = virtq_get(&b->q, &len))) {
			r->done = true;
			completed++;
		}
		if (completed == n)
			break;
		if (!irq)
			cpu_relax();
		if (deadline_passed(deadline)) {
			report("blk fail timeout completed=%d/%d mode=%s status=0x%x", completed, n,
			       irq ? "irq" : "polled", virtio_status(&b->dev));
			return false;
		}
	}
	virtq_interrupts(&b->q, false);
	for (int i = 0; i < n; i++) {
		struct blk_req *r = &b->reqs[i];
		if (r->status != VIRTIO_BLK_S_OK) {
			report("blk fail request type=%u sector=%lu status=%u", r->hdr.type, r->hdr.sector, r->status);
			return false;
		}
	}
	return true;
}

static bool flush(struct blk *b, bool irq)
{
	if (!(b->dev.features & (1ull << VIRTIO_BLK_F_FLUSH)))
		return true;
	struct blk_req *r = &b->reqs[0];
	r->hdr = (struct blk_hdr){.type = VIRTIO_BLK_T_FLUSH};
	r->len = 0;
	return run(b, 1, irq);
}

/* Writes (or reads and verifies) sectors [start, start+count) in batches
 * of `depth` requests of `req_sectors` each. */
static bool transfer(struct blk *b, bool write, u64 start, u64 count, bool irq)
{
	u64 s = start, end = start + count;
	while (s < end) {
		int n = 0;
		for (; n < (int)b->depth && s < end; n++) {
			struct blk_req *r = &b->reqs[n];
			u32 c = end - s < b->req_sectors ? (u32)(end - s) : b->req_sectors;
			r->hdr = (struct blk_hdr){.type = write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN, .sector = s};
			r->len = c * SECTOR;
			if (write)
				fill(r->data, b->seed, s, c);
			else
				memset(r->data, 0, r->len);
			s += c;
		}
		if (!run(b, n, irq))
			return false;
		if (!write) {
			for (int i = 0; i < n; i++) {
				struct blk_req *r = &b->reqs[i];
				if (!check(r->data, b->seed, r->hdr.sector, r->len / SECTOR))
					return false;
				b->verified += r->len / SECTOR;
			}
		}
	}
	return true;
}

static bool phase(struct blk *b, u64 start, u64 count, bool irq)
{
	if (count == 0)
		return true;
	if (irq && !b->msix) {
		report("blk fail irq mode needs MSI-X, which the device does not have");
		return false;
	}
	u32 before = irq_counts[VEC_BLK];
	if (irq)
		irq_enable();
	bool ok = transfer(b, true, start, count, irq) && flush(b, irq) && transfer(b, false, start, count, irq);
	if (irq) {
		irq_disable();
		b->irqs += irq_counts[VEC_BLK] - before;
	}
	report("blk %s sectors %lu+%lu %s", irq ? "irq" : "polled", start, count, ok ? "written and verified" : "failed");
	return ok;
}

/* Polled random reads for `ms` milliseconds with b->depth requests in
 * flight at all times: each completion is replaced at once and the
 * doorbell rung once per round that added requests. Reports the count and
 * the rate; nothing is verified (the data is whatever the disk holds). */
static bool bench(struct blk *b, u64 capacity, u64 ms)
{
	u64 blocks = capacity / b->req_sectors;
	if (blocks == 0) {
		report("blk fail bench needs at least %u sectors", b->req_sectors);
		return false;
	}
	u64 rng = 0x2545F4914F6CDD1Dull;
	u64 ios = 0;
	u32 in_flight = 0;
	u64 start_ms = clock_ms();
	u64 end = deadline_after_ms(ms);
	u64 stall = deadline_after_ms(ms + TIMEOUT_MS);
	bool stop = false;
	for (u32 i = 0; i < b->depth; i++) {
		b->reqs[i].len = b->req_sectors * SECTOR;
		b->reqs[i].done = true; /* free */
	}
	for (;;) {
		u32 added = 0;
		for (u32 i = 0; !stop && i < b->depth; i++) {
			struct blk_req *r = &b->reqs[i];
			if (!r->done)
				continue;
			rng ^= rng << 13;
			rng ^= rng >> 7;
			rng ^= rng << 17;
			r->hdr = (struct blk_hdr){.type = VIRTIO_BLK_T_IN, .sector = (rng % blocks) * b->req_sectors};
			r->status = 0xFF;
			r->done = false;
			struct vbuf hdr = {&r->hdr, sizeof(r->hdr)};
			struct vbuf in[2] = {{r->data, r->len}, {&r->status, 1}};
			if (!virtq_add(&b->q, &hdr, 1, in, 2, r)) {
				report("blk fail ring full");
				return false;
			}
			added++;
			in_flight++;
		}
		if (added)
			virtq_kick(&b->q);
		u32 len;
		struct blk_req *r;
		while ((r = virtq_get(&b->q, &len))) {
			if (r->status != VIRTIO_BLK_S_OK) {
				report("blk fail bench read sector=%lu status=%u", r->hdr.sector, r->status);
				return false;
			}
			r->done = true;
			in_flight--;
			ios++;
		}
		if (!stop && deadline_passed(end))
			stop = true;
		if (stop && in_flight == 0)
			break;
		if (deadline_passed(stall)) {
			report("blk fail bench timeout in_flight=%u", in_flight);
			return false;
		}
		cpu_relax();
	}
	u64 elapsed = clock_ms() - start_ms;
	report("blk bench ios=%lu ms=%lu iops=%lu depth=%u bytes=%u", ios, elapsed,
	       elapsed ? ios * 1000 / elapsed : 0, b->depth, b->req_sectors * SECTOR);
	return true;
}

static void get_id(struct blk *b)
{
	struct blk_req *r = &b->reqs[0];
	r->hdr = (struct blk_hdr){.type = VIRTIO_BLK_T_GET_ID};
	r->len = ID_LEN;
	memset(r->data, 0, ID_LEN + 1);
	if (!run(b, 1, false)) {
		report("blk id unsupported");
		return;
	}
	char id[ID_LEN + 1];
	for (int i = 0; i <= ID_LEN; i++)
		id[i] = (i < ID_LEN && r->data[i] >= 0x20 && r->data[i] < 0x7F) ? (char)r->data[i] : 0;
	report("blk id=%s", id);
}

static bool setup(struct blk *b, struct pci_fn *f)
{
	u64 supported = VIRTIO_F_VERSION_1 | (1ull << VIRTIO_BLK_F_RO) | (1ull << VIRTIO_BLK_F_BLK_SIZE) |
			(1ull << VIRTIO_BLK_F_FLUSH);
	if (!virtio_probe(&b->dev, f, "blk") || !virtio_negotiate(&b->dev, supported))
		return false;
	b->msix = pci_msix_enable(f) && pci_msix_route(f, 0, VEC_BLK);
	if (!virtq_setup(&b->q, &b->dev, 0, 128, b->msix ? 0 : VIRTIO_MSI_NO_VECTOR))
		return false;
	virtq_interrupts(&b->q, false);
	/* Three descriptors a request. */
	u32 depth = b->q.size / 3;
	if (b->depth > depth)
		b->depth = depth;
	b->reqs = alloc(sizeof(struct blk_req) * MAX_DEPTH, 64);
	if (!b->reqs)
		return false;
	for (int i = 0; i < MAX_DEPTH; i++) {
		b->reqs[i].data = alloc(MAX_REQ_SECTORS * SECTOR, 4096);
		if (!b->reqs[i].data)
			return false;
	}
	return virtio_driver_ok(&b->dev);
}

bool blk_test(struct pci_fn *f)
{
	static struct blk b;
	memset(&b, 0, sizeof(b));
	u64 start = cmdline_u64("blk.sector", 0);
	u64 count = cmdline_u64("blk.count", 0);
	b.seed = cmdline_u64("blk.seed", 1);
	b.req_sectors = (u32)cmdline_u64("blk.req", 8);
	b.depth = (u32)cmdline_u64("blk.depth", 4);
	if (b.req_sectors == 0 || b.req_sectors > MAX_REQ_SECTORS)
		b.req_sectors = 8;
	if (b.depth == 0 || b.depth > MAX_DEPTH)
		b.depth = 4;
	bool polled = !cmdline_is("blk.mode", "irq", "both");
	bool irq = !cmdline_is("blk.mode", "polled", "both");

	if (!setup(&b, f)) {
		report("blk fail setup");
		virtio_reset(&b.dev);
		return false;
	}
	u64 capacity = virtio_cfg64(&b.dev, CFG_CAPACITY);
	u32 blk_size = (b.dev.features & (1ull << VIRTIO_BLK_F_BLK_SIZE)) ? virtio_cfg32(&b.dev, CFG_BLK_SIZE) : 512;
	bool ro = b.dev.features & (1ull << VIRTIO_BLK_F_RO);
	bool can_flush = b.dev.features & (1ull << VIRTIO_BLK_F_FLUSH);
	report("blk capacity=%lu sectors blk_size=%u ro=%d flush=%d msix=%d depth=%u req=%u", capacity, blk_size, ro,
	       can_flush, b.msix, b.depth, b.req_sectors);
	get_id(&b);

	bool ok = true;
	u64 bench_ms = cmdline_u64("blk.bench", 0);
	if (bench_ms) {
		ok = bench(&b, capacity, bench_ms);
		if (ok)
			report("blk ok bench");
		virtio_reset(&b.dev);
		return ok;
	}
	if (count == 0) {
		/* Nothing to write: read what is there, both ways, to prove the
		 * path (no verification possible). */
		count = capacity < 8 ? capacity : 8;
		struct blk_req *r = &b.reqs[0];
		r->hdr = (struct blk_hdr){.type = VIRTIO_BLK_T_IN, .sector = 0};
		r->len = (u32)count * SECTOR;
		ok = (!polled || run(&b, 1, false));
		if (ok && irq) {
			if (!b.msix) {
				report("blk fail irq mode needs MSI-X, which the device does not have");
				ok = false;
			} else {
				u32 before = irq_counts[VEC_BLK];
				irq_enable();
				ok = run(&b, 1, true);
				irq_disable();
				b.irqs += irq_counts[VEC_BLK] - before;
			}
		}
		report("blk %s written=0 verified=0 read=%lu irqs=%u (no blk.count: nothing written)",
		       ok ? "ok" : "fail", count, b.irqs);
		virtio_reset(&b.dev);
		return ok;
	}
	if (ro) {
		report("blk fail device is read-only");
		ok = false;
	} else if (start + count > capacity || start + count < start) {
		report("blk fail sectors %lu+%lu beyond capacity %lu", start, count, capacity);
		ok = false;
	} else {
		u64 first = polled && irq ? count / 2 : (polled ? count : 0);
		ok = phase(&b, start, first, false) && phase(&b, start + first, count - first, true);
		/* And all of it once more, so each half is also read by the
		 * other mode's successor. */
		ok = ok && transfer(&b, false, start, count, false);
	}
	if (ok)
		report("blk ok written=%lu verified=%lu irqs=%u wakeups=%u flush=%s", count, b.verified, b.irqs,
		       b.wakeups, can_flush ? "ok" : "unsupported");
	virtio_reset(&b.dev);
	return ok;
}
