#include "virtq.h"

#include "console.h"
#include "memory.h"

bool virtq_setup(struct virtq *q, struct virtio_dev *d, u16 index, u16 max_size, u16 msix_entry)
{
	volatile u8 *c = d->common;
	memset(q, 0, sizeof(*q));
	q->dev = d;
	q->index = index;
	if (index >= d->num_queues) {
		report("%s queue %u: the device has %u queues", d->name, index, d->num_queues);
		return false;
	}
	mmio_write16(c + VIRTIO_COMMON_Q_SELECT, index);
	u16 dev_size = mmio_read16(c + VIRTIO_COMMON_Q_SIZE);
	if (dev_size == 0) {
		report("%s queue %u not available", d->name, index);
		return false;
	}
	if (mmio_read16(c + VIRTIO_COMMON_Q_ENABLE)) {
		report("%s queue %u already enabled after reset", d->name, index);
		return false;
	}
	u16 size = 1;
	while ((u32)size * 2 <= dev_size && (u32)size * 2 <= max_size)
		size *= 2;
	q->size = size;

	q->desc = alloc(sizeof(struct virtq_desc) * size, 4096);
	q->avail = alloc(sizeof(struct virtq_avail) + 2u * size + 2, 4096);
	q->used = alloc(sizeof(struct virtq_used) + sizeof(struct virtq_used_elem) * size + 2, 4096);
	q->tokens = alloc(sizeof(void *) * size, 8);
	if (!q->desc || !q->avail || !q->used || !q->tokens) {
		report("%s queue %u: out of memory", d->name, index);
		return false;
	}
	for (u16 i = 0; i < size; i++)
		q->desc[i].next = (u16)(i + 1);
	q->num_free = size;

	mmio_write16(c + VIRTIO_COMMON_Q_SIZE, size);
	mmio_write32(c + VIRTIO_COMMON_Q_DESCLO, (u32)phys(q->desc));
	mmio_write32(c + VIRTIO_COMMON_Q_DESCHI, (u32)(phys(q->desc) >> 32));
	mmio_write32(c + VIRTIO_COMMON_Q_AVAILLO, (u32)phys(q->avail));
	mmio_write32(c + VIRTIO_COMMON_Q_AVAILHI, (u32)(phys(q->avail) >> 32));
	mmio_write32(c + VIRTIO_COMMON_Q_USEDLO, (u32)phys(q->used));
	mmio_write32(c + VIRTIO_COMMON_Q_USEDHI, (u32)(phys(q->used) >> 32));
	q->msix_entry = VIRTIO_MSI_NO_VECTOR;
	if (msix_entry != VIRTIO_MSI_NO_VECTOR) {
		mmio_write16(c + VIRTIO_COMMON_Q_MSIX, msix_entry);
		if (mmio_read16(c + VIRTIO_COMMON_Q_MSIX) != msix_entry) {
			report("%s queue %u: the device refused MSI-X entry %u", d->name, index, msix_entry);
			return false;
		}
		q->msix_entry = msix_entry;
	}
	u32 noff = (u32)mmio_read16(c + VIRTIO_COMMON_Q_NOFF) * d->notify_mult;
	if (noff + 2 > d->notify_len) {
		report("%s queue %u: notify offset 0x%x outside the notify structure", d->name, index, noff);
		return false;
	}
	q->notify = d->notify + noff;
	mmio_write16(c + VIRTIO_COMMON_Q_ENABLE, 1);
	report("%s queue %u size=%u (device max %u) notify=%p msix=%d", d->name, index, size, dev_size,
	       (void *)q->notify, msix_entry == VIRTIO_MSI_NO_VECTOR ? -1 : (int)msix_entry);
	return true;
}

bool virtq_add(struct virtq *q, const struct vbuf *out, int n_out, const struct vbuf *in, int n_in, void *token)
{
	int n = n_out + n_in;
	if (n == 0 || n > q->num_free || !token)
		return false;
	u16 head = q->free_head, id = head, last = head;
	for (int i = 0; i < n; i++) {
		const struct vbuf *b = i < n_out ? &out[i] : &in[i - n_out];
		volatile struct virtq_desc *dsc = &q->desc[id];
		dsc->addr = phys(b->addr);
		dsc->len = b->len;
		dsc->flags = (u16)((i < n_out ? 0 : VIRTQ_DESC_F_WRITE) | (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
		last = id;
		id = dsc->next;
	}
	q->free_head = q->desc[last].next;
	q->num_free = (u16)(q->num_free - n);
	q->tokens[head] = token;
	q->avail->ring[q->next_avail % q->size] = head;
	/* The ring entry (and the descriptors) before the index that
	 * publishes them; x86 keeps stores in order, the compiler must too. */
	barrier();
	q->next_avail++;
	q->avail->idx = q->next_avail;
	return true;
}

void virtq_kick(struct virtq *q)
{
	/* The index store must be visible before the flags are read, or a
	 * device that is about to sleep could be missed (2.7.13). */
	mb();
	if (!(q->used->flags & VIRTQ_USED_F_NO_NOTIFY))
		mmio_write16(q->notify, q->index);
}

void *virtq_get(struct virtq *q, u32 *len)
{
	for (;;) {
		u16 used_idx = q->used->idx;
		if (used_idx == q->last_used)
			return NULL;
		/* Read the entry only after the index that published it. */
		barrier();
		volatile struct virtq_used_elem *e = &q->used->ring[q->last_used % q->size];
		u32 id = e->id;
		u32 written = e->len;
		q->last_used++;
		if (id >= q->size || !q->tokens[id]) {
			q->bad_used++;
			report("%s queue %u: used entry names descriptor %u, not a chain in flight", q->dev->name,
			       q->index, id);
			continue;
		}
		void *token = q->tokens[id];
		q->tokens[id] = NULL;
		u16 tail = (u16)id;
		u16 count = 1;
		while (q->desc[tail].flags & VIRTQ_DESC_F_NEXT) {
			tail = q->desc[tail].next;
			count++;
		}
		q->desc[tail].next = q->free_head;
		q->free_head = (u16)id;
		q->num_free = (u16)(q->num_free + count);
		*len = written;
		return token;
	}
}

void virtq_interrupts(struct virtq *q, bool on) { q->avail->flags = on ? 0 : VIRTQ_AVAIL_F_NO_INTERRUPT; }
