#include "pci.h"

#include "console.h"
#include "lapic.h"
#include "memory.h"
#include "startinfo.h"

#define CONF1_ADDR 0xCF8
#define CONF1_DATA 0xCFC

/* The 32-bit BAR window of this project's machine model (vmm/README.md);
 * QEMU's microvm uses the same range. The page tables map it for CPL3. */
#define BAR_WINDOW_START 0xC0000000ull
#define BAR_WINDOW_END 0xE0000000ull
#define MAPPED_LIMIT 0x100000000ull

#define VIRTIO_VENDOR 0x1AF4

#define MSIX_CTRL 2
#define MSIX_TABLE 4
#define MSIX_CTRL_ENABLE 0x8000
#define MSIX_CTRL_FUNCTION_MASK 0x4000
#define MSIX_ENTRY_SIZE 16
#define MSIX_ENTRY_CTRL_MASKED 1

static u64 ecam_base;

static volatile u8 *ecam_addr(const struct pci_fn *f, u16 off)
{
	return (volatile u8 *)(uintptr_t)(ecam_base + ((u64)f->dev << 15) + ((u64)f->fn << 12) + off);
}

static void conf1_select(const struct pci_fn *f, u16 off)
{
	outl(CONF1_ADDR, 0x80000000u | ((u32)f->dev << 11) | ((u32)f->fn << 8) | (off & 0xFC));
}

u32 pci_read32(const struct pci_fn *f, u16 off)
{
	if (ecam_base)
		return mmio_read32(ecam_addr(f, off));
	conf1_select(f, off);
	return inl(CONF1_DATA);
}

u16 pci_read16(const struct pci_fn *f, u16 off)
{
	if (ecam_base)
		return mmio_read16(ecam_addr(f, off));
	conf1_select(f, off);
	return inw(CONF1_DATA + (off & 2));
}

u8 pci_read8(const struct pci_fn *f, u16 off)
{
	if (ecam_base)
		return mmio_read8(ecam_addr(f, off));
	conf1_select(f, off);
	return inb(CONF1_DATA + (off & 3));
}

void pci_write32(const struct pci_fn *f, u16 off, u32 v)
{
	if (ecam_base) {
		mmio_write32(ecam_addr(f, off), v);
		return;
	}
	conf1_select(f, off);
	outl(CONF1_DATA, v);
}

void pci_write16(const struct pci_fn *f, u16 off, u16 v)
{
	if (ecam_base) {
		mmio_write16(ecam_addr(f, off), v);
		return;
	}
	conf1_select(f, off);
	outw(CONF1_DATA + (off & 2), v);
}

/* Sizes the BARs the usual way: decoding off, all ones written, the mask
 * read back, the original value restored. */
static void size_bars(struct pci_fn *f)
{
	u16 cmd = pci_read16(f, PCI_COMMAND);
	pci_write16(f, PCI_COMMAND, cmd & ~(PCI_COMMAND_IO | PCI_COMMAND_MEMORY));
	for (int i = 0; i < 6; i++) {
		u16 reg = PCI_BAR0 + 4 * i;
		u32 orig = pci_read32(f, reg);
		pci_write32(f, reg, 0xFFFFFFFF);
		u32 mask = pci_read32(f, reg);
		pci_write32(f, reg, orig);
		struct pci_bar *b = &f->bar[i];
		if (orig & 1) {
			b->io = true;
			b->addr = orig & ~3u;
			u32 m = mask & ~3u;
			b->size = m ? (u16)(~m + 1) : 0;
			continue;
		}
		u64 addr = orig & ~0xFull;
		u64 m = (mask & ~0xFull) | 0xFFFFFFFF00000000ull;
		if (((orig >> 1) & 3) == 2 && i < 5) {
			u32 orig_hi = pci_read32(f, reg + 4);
			pci_write32(f, reg + 4, 0xFFFFFFFF);
			u32 mask_hi = pci_read32(f, reg + 4);
			pci_write32(f, reg + 4, orig_hi);
			addr |= (u64)orig_hi << 32;
			m = ((u64)mask_hi << 32) | (mask & ~0xFull);
			b->is64 = true;
			f->bar[i + 1].size = 0; /* the upper half */
		}
		b->addr = addr;
		b->size = (mask & ~0xFull) ? ~m + 1 : 0;
		if (b->is64)
			i++;
	}
	pci_write16(f, PCI_COMMAND, cmd);
}

static void program_bar(struct pci_fn *f, int i, u64 addr)
{
	u16 reg = PCI_BAR0 + 4 * i;
	u32 lo = pci_read32(f, reg) & 0xF;
	pci_write32(f, reg, (u32)addr | lo);
	if (f->bar[i].is64)
		pci_write32(f, reg + 4, (u32)(addr >> 32));
	f->bar[i].addr = addr;
}

static bool in_window(const struct pci_bar *b)
{
	return !b->io && b->size && b->addr >= BAR_WINDOW_START && b->addr < BAR_WINDOW_END;
}

int pci_scan(struct pci_fn *out, int max)
{
	ecam_base = cmdline_u64("pci.ecam", 0);
	int n = 0;
	for (u8 dev = 0; dev < 32 && n < max; dev++) {
		for (u8 fn = 0; fn < 8 && n < max; fn++) {
			struct pci_fn *f = &out[n];
			memset(f, 0, sizeof(*f));
			f->dev = dev;
			f->fn = fn;
			u32 id = pci_read32(f, PCI_VENDOR_ID);
			if ((id & 0xFFFF) == 0xFFFF || (id & 0xFFFF) == 0) {
				if (fn == 0)
					break;
				continue;
			}
			f->vendor = id & 0xFFFF;
			f->device = id >> 16;
			u32 cls = pci_read32(f, PCI_REVISION);
			f->revision = cls & 0xFF;
			f->subclass = (cls >> 16) & 0xFF;
			f->class_code = cls >> 24;
			u8 htype = pci_read8(f, PCI_HEADER_TYPE);
			if ((htype & 0x7F) == 0) {
				u32 sub = pci_read32(f, PCI_SUBSYS_VENDOR);
				f->subsys_vendor = sub & 0xFFFF;
				f->subsys_id = sub >> 16;
				size_bars(f);
				f->msix_cap = pci_find_cap(f, PCI_CAP_ID_MSIX, 0);
			}
			n++;
			if (fn == 0 && !(htype & 0x80))
				break;
		}
	}

	/* Unassigned (or unreachable, above 4 GiB) memory BARs of the devices
	 * this guest drives go into the window above everything already there. */
	u64 next = BAR_WINDOW_START;
	for (int i = 0; i < n; i++)
		for (int b = 0; b < 6; b++)
			if (in_window(&out[i].bar[b]) && out[i].bar[b].addr + out[i].bar[b].size > next)
				next = out[i].bar[b].addr + out[i].bar[b].size;
	for (int i = 0; i < n; i++) {
		struct pci_fn *f = &out[i];
		if (f->vendor != VIRTIO_VENDOR)
			continue;
		u16 cmd = pci_read16(f, PCI_COMMAND);
		pci_write16(f, PCI_COMMAND, cmd & ~PCI_COMMAND_MEMORY);
		for (int b = 0; b < 6; b++) {
			struct pci_bar *bar = &f->bar[b];
			if (bar->io || !bar->size || (bar->addr && bar->addr + bar->size <= MAPPED_LIMIT))
				continue;
			u64 addr = (next + bar->size - 1) & ~(bar->size - 1);
			if (addr + bar->size > BAR_WINDOW_END || (!bar->is64 && bar->addr >= MAPPED_LIMIT)) {
				report("pci 00:%02x.%x bar%d size=0x%lx does not fit the window", f->dev, f->fn, b,
				       bar->size);
				continue;
			}
			report("pci 00:%02x.%x bar%d 0x%lx -> 0x%lx (assigned by the guest)", f->dev, f->fn, b,
			       bar->addr, addr);
			program_bar(f, b, addr);
			next = addr + bar->size;
		}
		pci_write16(f, PCI_COMMAND, (cmd & ~PCI_COMMAND_IO) | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
	}
	return n;
}

u8 pci_find_cap(const struct pci_fn *f, u8 id, u8 from)
{
	if (!(pci_read16(f, PCI_STATUS) & PCI_STATUS_CAP_LIST))
		return 0;
	u8 ptr = from ? pci_read8(f, from + 1) : pci_read8(f, PCI_CAP_PTR);
	for (int guard = 0; guard < 48 && ptr >= 0x40; guard++) {
		ptr &= 0xFC;
		if (pci_read8(f, ptr) == id)
			return ptr;
		ptr = pci_read8(f, ptr + 1);
	}
	return 0;
}

volatile u8 *pci_bar_map(const struct pci_fn *f, u8 bar, u32 off, u32 len)
{
	if (bar >= 6 || f->bar[bar].io || !f->bar[bar].size || (u64)off + len > f->bar[bar].size ||
	    f->bar[bar].addr + f->bar[bar].size > MAPPED_LIMIT) {
		report("pci 00:%02x.%x bar%u cannot hold 0x%x+0x%x", f->dev, f->fn, bar, off, len);
		return NULL;
	}
	return (volatile u8 *)(uintptr_t)(f->bar[bar].addr + off);
}

u16 pci_msix_table_size(const struct pci_fn *f)
{
	return f->msix_cap ? (pci_read16(f, f->msix_cap + MSIX_CTRL) & 0x7FF) + 1 : 0;
}

static volatile u8 *msix_table(const struct pci_fn *f)
{
	u32 t = pci_read32(f, f->msix_cap + MSIX_TABLE);
	return pci_bar_map(f, t & 7, t & ~7u, pci_msix_table_size(f) * MSIX_ENTRY_SIZE);
}

bool pci_msix_enable(const struct pci_fn *f)
{
	if (!f->msix_cap)
		return false;
	volatile u8 *table = msix_table(f);
	if (!table)
		return false;
	u16 ctrl = pci_read16(f, f->msix_cap + MSIX_CTRL);
	pci_write16(f, f->msix_cap + MSIX_CTRL, ctrl | MSIX_CTRL_ENABLE | MSIX_CTRL_FUNCTION_MASK);
	for (u16 i = 0; i < pci_msix_table_size(f); i++)
		mmio_write32(table + i * MSIX_ENTRY_SIZE + 12, MSIX_ENTRY_CTRL_MASKED);
	pci_write16(f, f->msix_cap + MSIX_CTRL, (ctrl | MSIX_CTRL_ENABLE) & ~MSIX_CTRL_FUNCTION_MASK);
	pci_write16(f, PCI_COMMAND, pci_read16(f, PCI_COMMAND) | PCI_COMMAND_INTX_DISABLE);
	return true;
}

bool pci_msix_route(const struct pci_fn *f, u16 entry, u8 vector)
{
	if (entry >= pci_msix_table_size(f))
		return false;
	volatile u8 *e = msix_table(f);
	if (!e)
		return false;
	e += entry * MSIX_ENTRY_SIZE;
	mmio_write32(e + 0, 0xFEE00000u | ((u32)lapic_id() << 12)); /* fixed, physical */
	mmio_write32(e + 4, 0);
	mmio_write32(e + 8, vector); /* edge */
	mmio_write32(e + 12, 0);     /* unmasked */
	return true;
}
