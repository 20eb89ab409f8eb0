/* Split virtqueues, driver side (virtio v1.2, 2.7). */
#ifndef TESTGUEST_VIRTQ_H
#define TESTGUEST_VIRTQ_H

#include "arch.h"
#include "virtio.h"

#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_USED_F_NO_NOTIFY 1

struct virtq_desc {
	u64 addr;
	u32 len;
	u16 flags;
	u16 next;
};

struct virtq_avail {
	u16 flags;
	u16 idx;
	u16 ring[];
};

struct virtq_used_elem {
	u32 id;
	u32 len;
};

struct virtq_used {
	u16 flags;
	u16 idx;
	struct virtq_used_elem ring[];
};

struct virtq {
	struct virtio_dev *dev;
	u16 index;
	u16 size;
	volatile struct virtq_desc *desc;
	volatile struct virtq_avail *avail;
	volatile struct virtq_used *used;
	volatile u8 *notify;
	u16 free_head;
	u16 num_free;
	u16 next_avail;
	u16 last_used;
	u16 msix_entry; /* VIRTIO_MSI_NO_VECTOR when none */
	void **tokens;
	u32 bad_used; /* used entries that named no chain in flight */
};

struct vbuf {
	void *addr;
	u32 len;
};

/* Sets up queue `index` with at most `max_size` entries (the device's size
 * rounded down to a power of two), interrupts on MSI-X `msix_entry` or
 * VIRTIO_MSI_NO_VECTOR. Call between FEATURES_OK and DRIVER_OK. */
bool virtq_setup(struct virtq *q, struct virtio_dev *d, u16 index, u16 max_size, u16 msix_entry);

/* Makes a chain of `n_out` device-readable then `n_in` device-writable
 * buffers available; `token` comes back from virtq_get. False when the
 * ring has too few free descriptors. */
bool virtq_add(struct virtq *q, const struct vbuf *out, int n_out, const struct vbuf *in, int n_in, void *token);

/* Notifies the device unless it asked not to be (VIRTQ_USED_F_NO_NOTIFY). */
void virtq_kick(struct virtq *q);

/* The next used chain's token and written length; NULL when none. */
void *virtq_get(struct virtq *q, u32 *len);

/* Whether the device should interrupt on used buffers (avail flags). */
void virtq_interrupts(struct virtq *q, bool on);

#endif
