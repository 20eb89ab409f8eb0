/* virtio-net (virtio v1.2, 5.1): queue 0 receives, queue 1 transmits, with
 * the 12-byte header of VIRTIO_F_VERSION_1 and no offloads, polled.
 *
 * net.role=send (default): net.count broadcast frames out.
 * net.role=ping: net.count numbered broadcast frames, each sent until its
 *   echo comes back (every net.retry ms, within net.timeout s); then "bye".
 * net.role=pong: echoes every ping to its sender until "bye", or until
 *   all net.count were answered and the line stayed quiet for a while.
 * Frames: ethertype 0x88B5 (local experimental), "SFTG", kind, seq, and a
 * payload derived from seq, net.len bytes in all; echoes are checked. */
#include "clock.h"
#include "console.h"
#include "devices.h"
#include "memory.h"
#include "startinfo.h"
#include "virtq.h"

#define VIRTIO_NET_F_MAC 5
#define VIRTIO_NET_F_STATUS 16
#define VIRTIO_NET_S_LINK_UP 1
#define CFG_MAC 0
#define CFG_STATUS 6

#define RX_QUEUE 0
#define TX_QUEUE 1
#define RX_BUFS 64
#define TX_BUFS 16
#define BUF_SIZE 2048
#define MAX_COUNT 4096

#define ETHERTYPE 0x88B5
#define ETH_HLEN 14
#define MIN_FRAME 60
#define MAX_FRAME 1514
#define KIND_PING 1
#define KIND_PONG 2
#define KIND_BYE 3
#define KIND_SEND 4
/* Offsets in the frame. */
#define OFF_MAGIC 14
#define OFF_KIND 18
#define OFF_SEQ 20
#define OFF_PAYLOAD 24

struct virtio_net_hdr {
	u8 flags;
	u8 gso_type;
	u16 hdr_len;
	u16 gso_size;
	u16 csum_start;
	u16 csum_offset;
	u16 num_buffers;
};

struct net {
	struct virtio_dev dev;
	struct virtq rx, tx;
	u8 mac[6];
	u8 *rx_buf[RX_BUFS];
	u8 *tx_buf[TX_BUFS];
	bool tx_busy[TX_BUFS];
	u32 frame_len;
	u32 sent;
	u32 other; /* frames received that were not for this test */
	u32 bad;   /* test frames with a wrong payload */
};

static const u8 broadcast[6] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};

static bool rx_post(struct net *n, u8 *buf)
{
	struct vbuf in = {buf, BUF_SIZE};
	return virtq_add(&n->rx, NULL, 0, &in, 1, buf);
}

static void tx_reclaim(struct net *n)
{
	u32 len;
	u8 *buf;
	while ((buf = virtq_get(&n->tx, &len)))
		for (int i = 0; i < TX_BUFS; i++)
			if (n->tx_buf[i] == buf)
				n->tx_busy[i] = false;
}

static bool send(struct net *n, const u8 *dst, u8 kind, u16 seq, const u8 *payload)
{
	u64 deadline = deadline_after_ms(2000);
	int slot = -1;
	while (slot < 0) {
		tx_reclaim(n);
		for (int i = 0; i < TX_BUFS && slot < 0; i++)
			if (!n->tx_busy[i])
				slot = i;
		if (slot < 0) {
			if (deadline_passed(deadline)) {
				report("net fail transmit ring stuck (status 0x%x)", virtio_status(&n->dev));
				return false;
			}
			cpu_relax();
		}
	}
	u8 *buf = n->tx_buf[slot];
	memset(buf, 0, sizeof(struct virtio_net_hdr));
	u8 *f = buf + sizeof(struct virtio_net_hdr);
	memcpy(f, dst, 6);
	memcpy(f + 6, n->mac, 6);
	f[12] = ETHERTYPE >> 8;
	f[13] = ETHERTYPE & 0xFF;
	memcpy(f + OFF_MAGIC, "SFTG", 4);
	f[OFF_KIND] = kind;
	f[OFF_KIND + 1] = 0;
	f[OFF_SEQ] = (u8)seq;
	f[OFF_SEQ + 1] = (u8)(seq >> 8);
	f[OFF_SEQ + 2] = 0;
	f[OFF_SEQ + 3] = 0;
	for (u32 i = OFF_PAYLOAD; i < n->frame_len; i++)
		f[i] = payload ? payload[i - OFF_PAYLOAD] : (u8)(seq * 7 + i);
	struct vbuf out = {buf, (u32)sizeof(struct virtio_net_hdr) + n->frame_len};
	if (!virtq_add(&n->tx, &out, 1, NULL, 0, buf)) {
		report("net fail transmit ring full");
		return false;
	}
	n->tx_busy[slot] = true;
	virtq_kick(&n->tx);
	n->sent++;
	return true;
}

struct frame {
	const u8 *data;
	u32 len;
	u8 kind;
	u16 seq;
};

static bool payload_ok(const struct frame *fr, u32 frame_len)
{
	if (fr->len < frame_len)
		return false;
	for (u32 i = OFF_PAYLOAD; i < frame_len; i++)
		if (fr->data[i] != (u8)(fr->seq * 7 + i))
			return false;
	return true;
}

/* The next received test frame, handed to `fn`; its buffer goes back on
 * the ring afterwards. Returns false when nothing arrived. */
static bool receive(struct net *n, void (*fn)(struct net *, const struct frame *, void *), void *ctx)
{
	u32 len;
	u8 *buf = virtq_get(&n->rx, &len);
	if (!buf)
		return false;
	struct frame fr = {buf + sizeof(struct virtio_net_hdr), 0, 0, 0};
	if (len >= sizeof(struct virtio_net_hdr) && len <= BUF_SIZE)
		fr.len = len - (u32)sizeof(struct virtio_net_hdr);
	if (fr.len >= OFF_PAYLOAD && fr.data[12] == (ETHERTYPE >> 8) && fr.data[13] == (ETHERTYPE & 0xFF) &&
	    !memcmp(fr.data + OFF_MAGIC, "SFTG", 4) && memcmp(fr.data + 6, n->mac, 6)) {
		fr.kind = fr.data[OFF_KIND];
		fr.seq = (u16)(fr.data[OFF_SEQ] | fr.data[OFF_SEQ + 1] << 8);
		fn(n, &fr, ctx);
	} else {
		n->other++;
	}
	rx_post(n, buf);
	virtq_kick(&n->rx);
	return true;
}

struct ping_state {
	u16 seq;
	bool answered;
	u32 stale;
};

static void on_ping_side(struct net *n, const struct frame *fr, void *ctx)
{
	struct ping_state *st = ctx;
	if (fr->kind != KIND_PONG) {
		n->other++;
		return;
	}
	if (fr->seq != st->seq) {
		st->stale++;
		return;
	}
	if (!payload_ok(fr, n->frame_len) || memcmp(fr->data, n->mac, 6)) {
		n->bad++;
		return;
	}
	st->answered = true;
}

static bool role_ping(struct net *n, u32 count, u64 timeout_ms, u64 retry_ms)
{
	struct ping_state st = {0, false, 0};
	u32 received = 0, retransmits = 0;
	u64 deadline = deadline_after_ms(timeout_ms);
	for (u32 seq = 0; seq < count; seq++) {
		st.seq = (u16)seq;
		st.answered = false;
		for (bool first = true; !st.answered; first = false) {
			if (!first)
				retransmits++;
			if (!send(n, broadcast, KIND_PING, (u16)seq, NULL))
				return false;
			u64 retry = deadline_after_ms(retry_ms);
			while (!st.answered && !deadline_passed(retry)) {
				if (!receive(n, on_ping_side, &st))
					cpu_relax();
			}
			if (!st.answered && deadline_passed(deadline)) {
				report("net fail role=ping no reply to seq=%u after %lu ms (sent=%u received=%u)", seq,
				       timeout_ms, n->sent, received);
				return false;
			}
		}
		received++;
	}
	for (int i = 0; i < 3; i++)
		send(n, broadcast, KIND_BYE, 0, NULL);
	report("net ok role=ping sent=%u received=%u retransmits=%u stale=%u bad=%u other=%u", count, received,
	       retransmits, st.stale, n->bad, n->other);
	return n->bad == 0;
}

struct pong_state {
	u8 *seen; /* MAX_COUNT bits */
	u32 count;
	u32 distinct;
	u32 duplicates;
	bool bye;
	bool failed;
};

static void on_pong_side(struct net *n, const struct frame *fr, void *ctx)
{
	struct pong_state *st = ctx;
	if (fr->kind == KIND_BYE) {
		st->bye = true;
		return;
	}
	if (fr->kind != KIND_PING) {
		n->other++;
		return;
	}
	if (!payload_ok(fr, n->frame_len) || fr->seq >= st->count) {
		n->bad++;
		return;
	}
	if (!send(n, fr->data + 6, KIND_PONG, fr->seq, fr->data + OFF_PAYLOAD)) {
		st->failed = true;
		return;
	}
	if (st->seen[fr->seq / 8] & (1 << (fr->seq % 8))) {
		st->duplicates++;
	} else {
		st->seen[fr->seq / 8] |= (u8)(1 << (fr->seq % 8));
		st->distinct++;
	}
}

static bool role_pong(struct net *n, u32 count, u64 timeout_ms)
{
	static u8 seen[MAX_COUNT / 8];
	memset(seen, 0, sizeof(seen));
	struct pong_state st = {seen, count, 0, 0, false, false};
	u64 deadline = deadline_after_ms(timeout_ms);
	u64 quiet = 0;
	while (!st.bye && !st.failed) {
		if (receive(n, on_pong_side, &st)) {
			if (st.distinct == count)
				quiet = deadline_after_ms(3000);
			continue;
		}
		/* Stay a little after the last answer, for the peer's
		 * retransmits and its "bye". */
		if (st.distinct == count && deadline_passed(quiet))
			break;
		if (deadline_passed(deadline))
			break;
		cpu_relax();
	}
	bool ok = !st.failed && st.distinct == count && n->bad == 0;
	report("net %s role=pong sent=%u received=%u duplicates=%u bye=%d bad=%u other=%u", ok ? "ok" : "fail",
	       st.distinct, st.distinct, st.duplicates, st.bye, n->bad, n->other);
	return ok;
}

static void count_rx(struct net *n, const struct frame *fr, void *ctx)
{
	(void)n;
	(void)fr;
	(*(u32 *)ctx)++;
}

static bool role_send(struct net *n, u32 count)
{
	for (u32 seq = 0; seq < count; seq++)
		if (!send(n, broadcast, KIND_SEND, (u16)seq, NULL))
			return false;
	/* Wait for the device to have consumed them all. */
	u64 deadline = deadline_after_ms(2000);
	u32 received = 0;
	for (;;) {
		tx_reclaim(n);
		bool busy = false;
		for (int i = 0; i < TX_BUFS; i++)
			busy |= n->tx_busy[i];
		while (receive(n, count_rx, &received))
			;
		if (!busy)
			break;
		if (deadline_passed(deadline)) {
			report("net fail role=send frames not transmitted (status 0x%x)", virtio_status(&n->dev));
			return false;
		}
		cpu_relax();
	}
	report("net ok role=send sent=%u received=%u other=%u", count, received, n->other);
	return true;
}

static bool setup(struct net *n, struct pci_fn *f)
{
	u64 supported = VIRTIO_F_VERSION_1 | (1ull << VIRTIO_NET_F_MAC) | (1ull << VIRTIO_NET_F_STATUS);
	if (!virtio_probe(&n->dev, f, "net") || !virtio_negotiate(&n->dev, supported))
		return false;
	if (n->dev.features & (1ull << VIRTIO_NET_F_MAC)) {
		for (int i = 0; i < 6; i++)
			n->mac[i] = virtio_cfg8(&n->dev, CFG_MAC + i);
	} else {
		/* Locally administered, unicast. */
		u64 t = rdtsc();
		const u8 mac[6] = {0x02, 0x53, 0x46, (u8)(t >> 16), (u8)(t >> 8), (u8)t};
		memcpy(n->mac, mac, 6);
	}
	if (!virtq_setup(&n->rx, &n->dev, RX_QUEUE, RX_BUFS, VIRTIO_MSI_NO_VECTOR) ||
	    !virtq_setup(&n->tx, &n->dev, TX_QUEUE, TX_BUFS * 2, VIRTIO_MSI_NO_VECTOR))
		return false;
	virtq_interrupts(&n->rx, false);
	virtq_interrupts(&n->tx, false);
	for (int i = 0; i < RX_BUFS; i++) {
		n->rx_buf[i] = alloc(BUF_SIZE, 64);
		if (!n->rx_buf[i])
			return false;
		if (i < (int)n->rx.size && !rx_post(n, n->rx_buf[i]))
			return false;
	}
	for (int i = 0; i < TX_BUFS; i++) {
		n->tx_buf[i] = alloc(BUF_SIZE, 64);
		if (!n->tx_buf[i])
			return false;
	}
	if (!virtio_driver_ok(&n->dev))
		return false;
	/* No notifications before DRIVER_OK (3.1.1). */
	virtq_kick(&n->rx);
	return true;
}

bool net_test(struct pci_fn *f)
{
	static struct net n;
	memset(&n, 0, sizeof(n));
	u32 count = (u32)cmdline_u64("net.count", 4);
	u64 timeout_ms = cmdline_u64("net.timeout", 60) * 1000;
	u64 retry_ms = cmdline_u64("net.retry", 200);
	n.frame_len = (u32)cmdline_u64("net.len", 1000);
	if (n.frame_len < MIN_FRAME)
		n.frame_len = MIN_FRAME;
	if (n.frame_len > MAX_FRAME)
		n.frame_len = MAX_FRAME;
	if (count > MAX_COUNT)
		count = MAX_COUNT;

	if (!setup(&n, f)) {
		report("net fail setup");
		virtio_reset(&n.dev);
		return false;
	}
	u16 status = (n.dev.features & (1ull << VIRTIO_NET_F_STATUS)) ? virtio_cfg16(&n.dev, CFG_STATUS)
									: VIRTIO_NET_S_LINK_UP;
	report("net mac=%02x:%02x:%02x:%02x:%02x:%02x link=%s frame=%u", n.mac[0], n.mac[1], n.mac[2], n.mac[3],
	       n.mac[4], n.mac[5], (status & VIRTIO_NET_S_LINK_UP) ? "up" : "down", n.frame_len);

	bool ok;
	if (cmdline_is("net.role", "ping", "send"))
		ok = role_ping(&n, count, timeout_ms, retry_ms);
	else if (cmdline_is("net.role", "pong", "send"))
		ok = role_pong(&n, count, timeout_ms);
	else if (cmdline_is("net.role", "send", "send"))
		ok = role_send(&n, count);
	else {
		report("net fail unknown net.role (ping, pong or send)");
		ok = false;
	}
	virtio_reset(&n.dev);
	return ok;
}
