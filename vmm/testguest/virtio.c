#include "virtio.h"

#include "clock.h"
#include "console.h"
#include "memory.h"

#define VIRTIO_VENDOR 0x1AF4

#define VIRTIO_PCI_CAP_COMMON_CFG 1
#define VIRTIO_PCI_CAP_NOTIFY_CFG 2
#define VIRTIO_PCI_CAP_ISR_CFG 3
#define VIRTIO_PCI_CAP_DEVICE_CFG 4

/* struct virtio_pci_cap, relative to the capability. */
#define CAP_CFG_TYPE 3
#define CAP_BAR 4
#define CAP_OFFSET 8
#define CAP_LENGTH 12
#define CAP_NOTIFY_MULT 16

u16 virtio_pci_type(const struct pci_fn *f)
{
	if (f->vendor != VIRTIO_VENDOR)
		return 0;
	if (f->device >= 0x1040 && f->device <= 0x107F)
		return f->device - 0x1040;
	if (f->device >= 0x1000 && f->device <= 0x103F)
		return f->subsys_id; /* transitional: type in the subsystem id */
	return 0;
}

static volatile u8 *common(const struct virtio_dev *d, u32 off) { return d->common + off; }

u8 virtio_status(const struct virtio_dev *d) { return mmio_read8(common(d, VIRTIO_COMMON_STATUS)); }

static void set_status(struct virtio_dev *d, u8 bits)
{
	mmio_write8(common(d, VIRTIO_COMMON_STATUS), virtio_status(d) | bits);
}

bool virtio_probe(struct virtio_dev *d, struct pci_fn *f, const char *name)
{
	memset(d, 0, sizeof(*d));
	d->pci = f;
	d->name = name;
	d->type = virtio_pci_type(f);
	/* The first usable instance of each structure wins (4.1.4). */
	for (u8 cap = pci_find_cap(f, PCI_CAP_ID_VNDR, 0); cap; cap = pci_find_cap(f, PCI_CAP_ID_VNDR, cap)) {
		u8 type = pci_read8(f, cap + CAP_CFG_TYPE);
		u8 bar = pci_read8(f, cap + CAP_BAR);
		u32 off = pci_read32(f, cap + CAP_OFFSET);
		u32 len = pci_read32(f, cap + CAP_LENGTH);
		if (bar >= 6 || f->bar[bar].io || !f->bar[bar].size)
			continue;
		switch (type) {
		case VIRTIO_PCI_CAP_COMMON_CFG:
			if (!d->common && len >= VIRTIO_COMMON_LEN)
				d->common = pci_bar_map(f, bar, off, len);
			break;
		case VIRTIO_PCI_CAP_NOTIFY_CFG:
			if (!d->notify && len >= 2) {
				d->notify = pci_bar_map(f, bar, off, len);
				d->notify_len = len;
				d->notify_mult = pci_read32(f, cap + CAP_NOTIFY_MULT);
			}
			break;
		case VIRTIO_PCI_CAP_ISR_CFG:
			if (!d->isr && len >= 1)
				d->isr = pci_bar_map(f, bar, off, len);
			break;
		case VIRTIO_PCI_CAP_DEVICE_CFG:
			if (!d->device) {
				d->device = pci_bar_map(f, bar, off, len);
				d->device_len = len;
			}
			break;
		}
	}
	if (!d->common || !d->notify || !d->isr) {
		report("%s missing virtio structures: common=%d notify=%d isr=%d", name, d->common != NULL,
		       d->notify != NULL, d->isr != NULL);
		return false;
	}
	d->num_queues = mmio_read16(common(d, VIRTIO_COMMON_NUMQ));
	report("%s virtio caps: common=%p notify=%p mult=%u isr=%p device=%p len=%u queues=%u", name,
	       (void *)d->common, (void *)d->notify, d->notify_mult, (void *)d->isr, (void *)d->device,
	       d->device_len, d->num_queues);
	return true;
}

void virtio_reset(struct virtio_dev *d)
{
	mmio_write8(common(d, VIRTIO_COMMON_STATUS), 0);
	/* The reset is complete when status reads back 0 (4.1.4.3.2). */
	u64 deadline = deadline_after_ms(1000);
	while (virtio_status(d) != 0) {
		if (deadline_passed(deadline)) {
			report("%s reset did not complete (status 0x%x)", d->name, virtio_status(d));
			return;
		}
		cpu_relax();
	}
}

void virtio_set_failed(struct virtio_dev *d) { set_status(d, VIRTIO_STATUS_FAILED); }

bool virtio_negotiate(struct virtio_dev *d, u64 supported)
{
	virtio_reset(d);
	set_status(d, VIRTIO_STATUS_ACKNOWLEDGE);
	set_status(d, VIRTIO_STATUS_DRIVER);

	mmio_write32(common(d, VIRTIO_COMMON_DFSELECT), 0);
	u64 offered = mmio_read32(common(d, VIRTIO_COMMON_DF));
	mmio_write32(common(d, VIRTIO_COMMON_DFSELECT), 1);
	offered |= (u64)mmio_read32(common(d, VIRTIO_COMMON_DF)) << 32;
	d->device_features = offered;
	d->features = offered & supported;
	report("%s features offered=0x%lx accepted=0x%lx", d->name, offered, d->features);
	if (!(d->features & VIRTIO_F_VERSION_1)) {
		report("%s does not offer VIRTIO_F_VERSION_1", d->name);
		virtio_set_failed(d);
		return false;
	}
	mmio_write32(common(d, VIRTIO_COMMON_GFSELECT), 0);
	mmio_write32(common(d, VIRTIO_COMMON_GF), (u32)d->features);
	mmio_write32(common(d, VIRTIO_COMMON_GFSELECT), 1);
	mmio_write32(common(d, VIRTIO_COMMON_GF), (u32)(d->features >> 32));
	set_status(d, VIRTIO_STATUS_FEATURES_OK);
	if (!(virtio_status(d) & VIRTIO_STATUS_FEATURES_OK)) {
		report("%s refused the features (FEATURES_OK not kept)", d->name);
		virtio_set_failed(d);
		return false;
	}
	return true;
}

bool virtio_driver_ok(struct virtio_dev *d)
{
	set_status(d, VIRTIO_STATUS_DRIVER_OK);
	u8 s = virtio_status(d);
	if ((s & (VIRTIO_STATUS_NEEDS_RESET | VIRTIO_STATUS_FAILED)) || !(s & VIRTIO_STATUS_DRIVER_OK)) {
		report("%s bad status after DRIVER_OK: 0x%x", d->name, s);
		return false;
	}
	return true;
}

static bool cfg_ok(const struct virtio_dev *d, u32 off, u32 len)
{
	if (!d->device || off + len > d->device_len) {
		report("%s config read 0x%x+%u outside the device structure", d->name, off, len);
		return false;
	}
	return true;
}

static u8 generation(const struct virtio_dev *d) { return mmio_read8(common(d, VIRTIO_COMMON_CFGGENERATION)); }

u8 virtio_cfg8(const struct virtio_dev *d, u32 off) { return cfg_ok(d, off, 1) ? mmio_read8(d->device + off) : 0; }

u16 virtio_cfg16(const struct virtio_dev *d, u32 off)
{
	return cfg_ok(d, off, 2) ? mmio_read16(d->device + off) : 0;
}

u32 virtio_cfg32(const struct virtio_dev *d, u32 off)
{
	return cfg_ok(d, off, 4) ? mmio_read32(d->device + off) : 0;
}

u64 virtio_cfg64(const struct virtio_dev *d, u32 off)
{
	if (!cfg_ok(d, off, 8))
		return 0;
	u8 gen;
	u64 v;
	do {
		gen = generation(d);
		v = mmio_read32(d->device + off);
		v |= (u64)mmio_read32(d->device + off + 4) << 32;
	} while (gen != generation(d));
	return v;
}
